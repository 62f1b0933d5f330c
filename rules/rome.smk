# ROME edits per case, their batched evaluation, and Table 1.

rule rome:
    input:
        cases=lambda w: stage_dir(RUN_OF[("rome", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        moment=lambda w: stage_dir(RUN_OF[("rome", w.model, w.hash)], "stats") / "mom2.pt",
        templates=lambda w: stage_dir(RUN_OF[("rome", w.model, w.hash)], "templates") / "templates.json",
    output:
        edits=f"{RESULTS}/{{model}}/rome/{{hash}}/{{split}}.edits.pt",
        diagnostics=f"{RESULTS}/{{model}}/rome/{{hash}}/{{split}}.rome.jsonl",
    params:
        py=PY,
        overrides=overrides_for("rome"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/rome/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/rome/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/rome_edits.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule eval_rome:
    input:
        cases=lambda w: stage_dir(RUN_OF[("eval_rome", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        edits=lambda w: stage_dir(RUN_OF[("eval_rome", w.model, w.hash)], "rome") / f"{w.split}.edits.pt",
    output:
        results=f"{RESULTS}/{{model}}/eval_rome/{{hash}}/{{split}}.results.jsonl",
        summary=f"{RESULTS}/{{model}}/eval_rome/{{hash}}/{{split}}.summary.json",
    params:
        py=PY,
        overrides=overrides_for("eval_rome"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/eval_rome/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/eval_rome/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/evaluate_edits.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule table1:
    input:
        # row order: per run, the unedited model and ROME, then ROME+REP (EREN rows join here)
        summaries=needs_splits("eval.report_split", [split_file(c, stage, c["eval"]["report_split"], suffix)
                                                     for c in CFGS for stage, suffix in TABLE1_FILES]),
        # the per-case results beside each summary, read (not passed) by make_table1.py for the intervals
        results=needs_splits("eval.report_split", [
            split_file(c, stage, c["eval"]["report_split"], suffix.replace("summary.json", "results.jsonl"))
            for c in CFGS for stage, suffix in TABLE1_FILES]),
    output:
        csv=report(f"{RESULTS}/tables/table1.csv", caption="../report/table1.rst", category="Tables"),
        md=f"{RESULTS}/tables/table1.md",
    params:
        py=PY,
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/table1.log",
    benchmark:
        f"{RESULTS}/benchmarks/table1.tsv"
    shell:
        "{params.py:q} scripts/make_table1.py --out-csv {output.csv:q} --out-md {output.md:q} {input.summaries:q} > {log:q} 2>&1"
