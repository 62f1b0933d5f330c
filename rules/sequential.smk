# Many edits (eval.sequential): each run's sequential_eval job on eval.sequential.split, its table and figure.
# Not part of `all` (hours on a CPU at the default checkpoints): `snakemake --cores all sequential`.


# MEMIT's layers' second moments: the run again with model.layer=<layer>. Only stats reads the layer among
# the stages sequential_eval consumes that way, so each layer adds one stats directory (ROME's layer: the run's).
for _ovr, _cfg in zip(RUNS, CFGS):
    for _layer in moment_layers(_cfg):
        _lcfg = at_layer(_cfg, _layer)
        _key = ("stats", _lcfg["model"]["name"], stage_hash(_lcfg, "stats"))
        OVERRIDES.setdefault(_key, _ovr + [f"model.layer={_layer}"])
        RUN_OF.setdefault(_key, _lcfg)

SEQUENTIAL_SUMMARIES = [split_file(c, "sequential_eval", c["eval"]["sequential"]["split"], "summary") for c in CFGS]
SEQUENTIAL_RESULTS = [split_file(c, "sequential_eval", c["eval"]["sequential"]["split"], "results") for c in CFGS]


rule sequential_eval:
    input:
        cases=upstream("sequential_eval", "cases", "cases"),
        templates=upstream("sequential_eval", "templates", "templates"),
        moments=sequential_moments,
        extra=sequential_extra,
    output:
        results=out("sequential_eval", "results"),
        summary=out("sequential_eval", "summary"),
    log:
        job_file("sequential_eval", "logs"),
    benchmark:
        job_file("sequential_eval", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("sequential_eval"),
    shell:
        stage_shell("sequential_eval")


rule sequential_table:
    input:
        summaries=needs_splits("eval.sequential.split", SEQUENTIAL_SUMMARIES),
        # the per-case records beside each summary, read (not passed) by the script for the intervals
        results=needs_splits("eval.sequential.split", SEQUENTIAL_RESULTS),
    output:
        csv=report(f"{RESULTS}/tables/sequential.csv", caption="../report/sequential.rst", category="Tables"),
        md=f"{RESULTS}/tables/sequential.md",
    log:
        f"{RESULTS}/logs/sequential_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/sequential_table.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
    shell:
        "{params.py:q} scripts/sequential_table.py --out-csv {output.csv:q} --out-md {output.md:q} {input.summaries:q} > {log:q} 2>&1"


rule plot_sequential:
    input:
        f"{RESULTS}/tables/sequential.csv",
    output:
        report(f"{RESULTS}/figures/sequential.png", caption="../report/sequential.rst", category="Figures"),
    log:
        f"{RESULTS}/logs/plot_sequential.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_sequential.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
    shell:
        "{params.py:q} scripts/plot_sequential.py --out-png {output:q} {input:q} > {log:q} 2>&1"


# the sequential table and figure in wandb (offline under results/wandb unless tracking.mode=online), as
# wandb_log does for `all`'s, in the group "sequential"
rule wandb_log_sequential:
    input:
        table=f"{RESULTS}/tables/sequential.csv",
        figure=f"{RESULTS}/figures/sequential.png",
    output:
        marker=f"{RESULTS}/wandb/wandb_log_sequential.json",
    log:
        f"{RESULTS}/logs/wandb_log_sequential.log",
    benchmark:
        f"{RESULTS}/benchmarks/wandb_log_sequential.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
        runs=RUN_ARGS,
    shell:
        "{params.py:q} scripts/wandb_log.py {params.runs} --group sequential --tables {input.table:q}"
        " --figures {input.figure:q} --out {output.marker:q} > {log:q} 2>&1"


rule sequential:
    input:
        f"{RESULTS}/tables/sequential.csv",
        f"{RESULTS}/figures/sequential.png",
        f"{RESULTS}/wandb/wandb_log_sequential.json",
