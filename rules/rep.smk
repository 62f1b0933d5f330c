# REP adaptors per case, ROME+REP evaluation, and the gate-threshold ablation (paper Figure 7).

rule rep:
    input:
        cases=lambda w: stage_dir(RUN_OF[("rep", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        templates=lambda w: stage_dir(RUN_OF[("rep", w.model, w.hash)], "templates") / "templates.json",
        edits=lambda w: stage_dir(RUN_OF[("rep", w.model, w.hash)], "rome") / f"{w.split}.edits.pt",
    output:
        adaptors=f"{RESULTS}/{{model}}/rep/{{hash}}/{{split}}.adaptors.pt",
        logs=f"{RESULTS}/{{model}}/rep/{{hash}}/{{split}}.rep.jsonl",
    params:
        py=PY,
        overrides=overrides_for("rep"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/rep/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/rep/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/rep_train.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule eval_rep:
    input:
        cases=lambda w: stage_dir(RUN_OF[("eval_rep", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        edits=lambda w: stage_dir(RUN_OF[("eval_rep", w.model, w.hash)], "rome") / f"{w.split}.edits.pt",
        adaptors=lambda w: stage_dir(RUN_OF[("eval_rep", w.model, w.hash)], "rep") / f"{w.split}.adaptors.pt",
        unedited=lambda w: stage_dir(RUN_OF[("eval_rep", w.model, w.hash)], "eval_rome") / f"{w.split}.results.jsonl",
    output:
        results=f"{RESULTS}/{{model}}/eval_rep/{{hash}}/{{split}}.results.jsonl",
        summary=f"{RESULTS}/{{model}}/eval_rep/{{hash}}/{{split}}.summary.json",
    params:
        py=PY,
        overrides=overrides_for("eval_rep"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/eval_rep/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/eval_rep/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/evaluate_rep.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule gate_threshold:
    input:
        summaries=needs_splits("rep.sweep_splits", [stage_dir(s, "eval_rep", split) / f"{split}.summary.json"
                                                    for _, _, s in SWEEP_CFGS for split in s["rep"]["sweep_splits"]]),
        # the per-case results beside each summary, read (not passed) by make_gate_table.py for the intervals
        results=needs_splits("rep.sweep_splits", [stage_dir(s, "eval_rep", split) / f"{split}.results.jsonl"
                                                  for _, _, s in SWEEP_CFGS for split in s["rep"]["sweep_splits"]]),
        # each run's ROME evaluation on the sweep splits (and its results): the paired differences' baseline
        rome=needs_splits("rep.sweep_splits", list(dict.fromkeys(
            stage_dir(c, "eval_rome", split) / f"{split}.summary.json"
            for c, _, _ in SWEEP_CFGS for split in c["rep"]["sweep_splits"]))),
        rome_results=needs_splits("rep.sweep_splits", list(dict.fromkeys(
            stage_dir(c, "eval_rome", split) / f"{split}.results.jsonl"
            for c, _, _ in SWEEP_CFGS for split in c["rep"]["sweep_splits"]))),
    output:
        csv=report(f"{RESULTS}/tables/gate_threshold.csv", caption="../report/gate_threshold.rst", category="Tables"),
        figure=report(f"{RESULTS}/figures/gate_threshold.png", caption="../report/gate_threshold.rst",
                      category="Figures"),
    params:
        py=PY,
        thresholds=[t for _, t, s in SWEEP_CFGS for split in s["rep"]["sweep_splits"]],  # one per summary
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/gate_threshold.log",
    benchmark:
        f"{RESULTS}/benchmarks/gate_threshold.tsv"
    shell:
        "{params.py:q} scripts/make_gate_table.py --out-csv {output.csv:q} --out-png {output.figure:q}"
        " --thresholds {params.thresholds:q} --summaries {input.summaries:q} --rome-summaries {input.rome:q}"
        " > {log:q} 2>&1"


rule rep_search:
    input:
        summaries=search_file("eval_rep", "summary.json"),
        results=search_file("eval_rep", "results.jsonl"),  # read beside each summary, for the intervals
        logs=search_file("rep", "rep.jsonl"),  # training diagnostics: final losses, gate fractions
        rome=search_file("eval_rome", "summary.json", baseline=True),
        rome_results=search_file("eval_rome", "results.jsonl", baseline=True),
    output:
        csv=report(f"{RESULTS}/tables/rep_search.csv", caption="../report/rep_search.rst", category="Tables"),
        md=f"{RESULTS}/tables/rep_search.md",
    params:
        py=PY,
        settings=[" ".join(p) or "(run setting)" for _, p, _ in SEARCH_CFGS],  # one label per summary
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/rep_search.log",
    benchmark:
        f"{RESULTS}/benchmarks/rep_search.tsv"
    shell:
        "{params.py:q} scripts/make_rep_search.py --out-csv {output.csv:q} --out-md {output.md:q}"
        " --settings {params.settings:q} --summaries {input.summaries:q} --logs {input.logs:q}"
        " --rome-summaries {input.rome:q} > {log:q} 2>&1"


# REP key diagnostics (not in `all`): per evaluated item, ROME's transfer ratio uᵀa / uᵀk* before and after the
# case's adaptor, joined with eval_rome's and eval_rep's exact match. `snakemake rep_diagnostics_all` builds it
# on eval.report_split of every run.
rule rep_diagnostics:
    input:
        cases=lambda w: stage_dir(RUN_OF[("rep_diagnostics", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        edits=lambda w: stage_dir(RUN_OF[("rep_diagnostics", w.model, w.hash)], "rome") / f"{w.split}.edits.pt",
        adaptors=lambda w: stage_dir(RUN_OF[("rep_diagnostics", w.model, w.hash)], "rep") / f"{w.split}.adaptors.pt",
        rome=lambda w: split_file(RUN_OF[("rep_diagnostics", w.model, w.hash)], "eval_rome", w.split, "results.jsonl"),
        rep=lambda w: split_file(RUN_OF[("rep_diagnostics", w.model, w.hash)], "eval_rep", w.split, "results.jsonl"),
    output:
        transfer=f"{RESULTS}/{{model}}/rep_diagnostics/{{hash}}/{{split}}.transfer.csv",
        summary=f"{RESULTS}/{{model}}/rep_diagnostics/{{hash}}/{{split}}.transfer_summary.csv",
        figure=f"{RESULTS}/{{model}}/rep_diagnostics/{{hash}}/{{split}}.transfer.png",
    params:
        py=PY,
        overrides=overrides_for("rep_diagnostics"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/rep_diagnostics/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/rep_diagnostics/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/rep_diagnostics.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule rep_diagnostics_all:
    input:
        needs_splits("eval.report_split", [split_file(c, "rep_diagnostics", c["eval"]["report_split"], suffix)
                                           for c in CFGS for suffix in ("transfer.csv", "transfer_summary.csv",
                                                                        "transfer.png")]),
