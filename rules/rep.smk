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
