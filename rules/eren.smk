# EREN (notes + retriever + reader): the notebook index, ES/BP/EQ on CounterFact-Hard and FEVER (EREN's
# Table 3), retrieval against notebook size, and EREN on the run's robustness cases (Table 1's EREN row).
# eren_index, eren_eval and eren_scaling do not read the edit model, so runs that differ only in the model
# share their hash: each distinct stage directory is planned once, under the first such run's model.

import re

EREN_NOTEBOOK_FILES = ("index", "notes", "meta")  # eren_index's files of each data set (Stage.files)


EREN_EVAL_CFGS = _one_run_per_hash("eren_eval")
# The data sets are eren.data's names (cfh and fever by default; any other `eren.data.<name>: <file>` or
# {file, kind} adds one): eren_index writes one notebook per name, eren_eval runs once per name. The index
# rule declares its notebooks, so every run names the same data sets (their files and kinds may differ).
EREN_DATASETS = list(CFGS[0]["eren"]["data"])
for _cfg, _run in zip(CFGS, RUNS):
    if list(_cfg["eren"]["data"]) != EREN_DATASETS:
        raise ConfigError(
            f"run {shlex.join(_run)!r}: eren.data names the data sets {list(_cfg['eren']['data'])}, "
            f"the first run {EREN_DATASETS}; EREN's rules need the same names in every run"
        )
EREN_SCALING_CFGS = _one_run_per_hash("eren_scaling")
EREN_TABLES = [
    f"{RESULTS}/tables/eren.csv",
    f"{RESULTS}/tables/eren_scaling.csv",
    f"{RESULTS}/figures/eren_scaling.png",
]
# Table 1's EREN row per run: the suite on eval.report_split (the path table1 reads)
EREN_SUITE_SUMMARIES = [split_file(c, "eren_suite", c["eval"]["report_split"], "summary") for c in CFGS]
EREN_TARGETS = [*EREN_TABLES, *EREN_SUITE_SUMMARIES]


wildcard_constraints:
    eren_dataset="|".join(re.escape(d) for d in EREN_DATASETS),


rule eren_index:
    input:
        manifest=DATA_MANIFEST,
    output:
        [out("eren_index", f, eren_dataset=d) for d in EREN_DATASETS for f in EREN_NOTEBOOK_FILES],
        report=out("eren_index", "report"),
    log:
        job_file("eren_index", "logs"),
    benchmark:
        job_file("eren_index", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("eren_index"),
    shell:
        stage_shell("eren_index")


rule eren_eval:
    input:
        notebook=upstream("eren_eval", "eren_index", *EREN_NOTEBOOK_FILES, per_dataset=True),
        reader=eren_reader("eren_eval"),
        manifest=DATA_MANIFEST,
    output:
        per_item=out("eren_eval", "items"),
        summary=out("eren_eval", "summary"),
    log:
        job_file("eren_eval", "logs"),
    benchmark:
        job_file("eren_eval", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("eren_eval"),
    shell:
        stage_shell("eren_eval")


rule eren_table:
    input:
        summaries=[stage_file(c, "eren_eval", "summary", eren_dataset=d) for c in EREN_EVAL_CFGS for d in EREN_DATASETS],
        # the per-item records beside each summary, read (not passed) by scripts/eren_table.py for the intervals
        per_item=[stage_file(c, "eren_eval", "items", eren_dataset=d) for c in EREN_EVAL_CFGS for d in EREN_DATASETS],
    output:
        csv=report(f"{RESULTS}/tables/eren.csv", caption="../report/eren.rst", category="Tables"),
        md=f"{RESULTS}/tables/eren.md",
    log:
        f"{RESULTS}/logs/eren_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/eren_table.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
    shell:
        "{params.py:q} scripts/eren_table.py --out-csv {output.csv:q} --out-md {output.md:q} {input.summaries:q} > {log:q} 2>&1"


rule eren_scaling:
    input:
        reader=eren_reader("eren_scaling"),
        manifest=DATA_MANIFEST,
    output:
        scaling=out("eren_scaling", "scaling"),
        per_item=out("eren_scaling", "items"),
    log:
        job_file("eren_scaling", "logs"),
    benchmark:
        job_file("eren_scaling", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("eren_scaling"),
    shell:
        stage_shell("eren_scaling")


rule eren_scaling_plot:
    input:
        scalings=[stage_file(c, "eren_scaling", "scaling") for c in EREN_SCALING_CFGS],
    output:
        csv=report(f"{RESULTS}/tables/eren_scaling.csv", caption="../report/eren_scaling.rst", category="Tables"),
        png=report(f"{RESULTS}/figures/eren_scaling.png", caption="../report/eren_scaling.rst", category="Figures"),
        fig_csv=f"{RESULTS}/figures/eren_scaling.csv",
    log:
        f"{RESULTS}/logs/eren_scaling_plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/eren_scaling_plot.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
    shell:
        "{params.py:q} scripts/eren_scaling_plot.py --out-csv {output.csv:q} --out-png {output.png:q}"
        " --out-fig-csv {output.fig_csv:q} {input.scalings:q} > {log:q} 2>&1"


rule eren_suite:
    input:
        cases=upstream("eren_suite", "cases", "cases"),
        reader=eren_reader("eren_suite"),
    output:
        results=out("eren_suite", "results"),
        summary=out("eren_suite", "summary"),
        # EREN+score beside EREN (its summary says "skipped" when no case is held out for its threshold)
        score_results=out("eren_suite", "score_results"),
        score_summary=out("eren_suite", "score_summary"),
    log:
        job_file("eren_suite", "logs"),
    benchmark:
        job_file("eren_suite", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("eren_suite"),
    shell:
        stage_shell("eren_suite")


rule eren:
    input:
        needs_splits("eval.report_split", EREN_TARGETS),
