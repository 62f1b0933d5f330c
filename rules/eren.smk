# EREN (notes + retriever + reader): the notebook index, ES/BP/EQ on CounterFact-Hard and FEVER (EREN's
# Table 3), retrieval against notebook size, and EREN on the run's robustness cases (Table 1's EREN row).
# eren_index, eren_eval and eren_scaling do not read the edit model, so runs that differ only in the model
# share their hash: each distinct stage directory is planned once, under the first such run's model.

import re

EREN_NOTEBOOK_FILES = ("index.faiss", "notes.json", "meta.json")


EREN_EVAL_CFGS = _one_run_per_hash("eren_eval")
# The data sets are eren.data's names (cfh and fever by default; any other `eren.data.<name>: <file>` or
# {file, kind} adds one): eren_index writes one notebook per name, eren_eval runs once per name. The index
# rule declares its notebooks, so every run names the same data sets (their files and kinds may differ).
EREN_DATASETS = list(CFGS[0]["eren"]["data"])
for _cfg, _run in zip(CFGS, RUNS):
    if list(_cfg["eren"]["data"]) != EREN_DATASETS:
        raise ConfigError(f"run {shlex.join(_run)!r}: eren.data names the data sets {list(_cfg['eren']['data'])}, "
                          f"the first run {EREN_DATASETS}; EREN's rules need the same names in every run")
EREN_SCALING_CFGS = _one_run_per_hash("eren_scaling")
EREN_TABLES = [f"{RESULTS}/tables/eren.csv", f"{RESULTS}/tables/eren_scaling.csv", f"{RESULTS}/figures/eren_scaling.png"]
# Table 1's EREN row per run: the suite on eval.report_split (the path table1 reads)
EREN_SUITE_SUMMARIES = [split_file(c, "eren_suite", c["eval"]["report_split"], "summary.json") for c in CFGS]
EREN_TARGETS = [*EREN_TABLES, *EREN_SUITE_SUMMARIES]


wildcard_constraints:
    eren_dataset="|".join(re.escape(d) for d in EREN_DATASETS),


rule eren_index:
    input:
        manifest=f"{DATA}/MANIFEST.json",
    output:
        [f"{RESULTS}/{{model}}/eren_index/{{hash}}/{d}/{f}" for d in EREN_DATASETS for f in EREN_NOTEBOOK_FILES],
        report=f"{RESULTS}/{{model}}/eren_index/{{hash}}/index.json",
    params:
        py=PY,
        overrides=overrides_for("eren_index"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/eren_index/{{hash}}/logs/eren_index.log",
    benchmark:
        f"{RESULTS}/{{model}}/eren_index/{{hash}}/benchmarks/eren_index.tsv"
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/eren_index.py {params.overrides} > {log:q} 2>&1"


rule eren_eval:
    input:
        notebook=lambda w: [stage_dir(RUN_OF[("eren_eval", w.model, w.hash)], "eren_index") / w.eren_dataset / f
                            for f in EREN_NOTEBOOK_FILES],
        reader=eren_reader("eren_eval"),
        manifest=f"{DATA}/MANIFEST.json",
    output:
        per_item=f"{RESULTS}/{{model}}/eren_eval/{{hash}}/{{eren_dataset}}.items.jsonl",
        summary=f"{RESULTS}/{{model}}/eren_eval/{{hash}}/{{eren_dataset}}.summary.json",
    params:
        py=PY,
        overrides=overrides_for("eren_eval"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/eren_eval/{{hash}}/logs/{{eren_dataset}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/eren_eval/{{hash}}/benchmarks/{{eren_dataset}}.tsv"
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/eren_eval.py {params.overrides} job.dataset={wildcards.eren_dataset:q} > {log:q} 2>&1"


rule eren_table:
    input:
        summaries=[stage_dir(c, "eren_eval") / f"{d}.summary.json" for c in EREN_EVAL_CFGS for d in EREN_DATASETS],
        # the per-item records beside each summary, read (not passed) by make_eren_table.py for the intervals
        per_item=[stage_dir(c, "eren_eval") / f"{d}.items.jsonl" for c in EREN_EVAL_CFGS for d in EREN_DATASETS],
    output:
        csv=report(f"{RESULTS}/tables/eren.csv", caption="../report/eren.rst", category="Tables"),
        md=f"{RESULTS}/tables/eren.md",
    params:
        py=PY,
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/eren_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/eren_table.tsv"
    shell:
        "{params.py:q} scripts/make_eren_table.py --out-csv {output.csv:q} --out-md {output.md:q} {input.summaries:q} > {log:q} 2>&1"


rule eren_scaling:
    input:
        reader=eren_reader("eren_scaling"),
        manifest=f"{DATA}/MANIFEST.json",
    output:
        scaling=f"{RESULTS}/{{model}}/eren_scaling/{{hash}}/scaling.json",
        per_item=f"{RESULTS}/{{model}}/eren_scaling/{{hash}}/scaling.items.jsonl",
    params:
        py=PY,
        overrides=overrides_for("eren_scaling"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/eren_scaling/{{hash}}/logs/eren_scaling.log",
    benchmark:
        f"{RESULTS}/{{model}}/eren_scaling/{{hash}}/benchmarks/eren_scaling.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/eren_scaling.py {params.overrides} > {log:q} 2>&1"


rule eren_scaling_plot:
    input:
        scalings=[stage_dir(c, "eren_scaling") / "scaling.json" for c in EREN_SCALING_CFGS],
    output:
        csv=report(f"{RESULTS}/tables/eren_scaling.csv", caption="../report/eren_scaling.rst", category="Tables"),
        png=report(f"{RESULTS}/figures/eren_scaling.png", caption="../report/eren_scaling.rst", category="Figures"),
        fig_csv=f"{RESULTS}/figures/eren_scaling.csv",
    params:
        py=PY,
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/eren_scaling_plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/eren_scaling_plot.tsv"
    shell:
        "{params.py:q} scripts/make_eren_scaling.py --out-csv {output.csv:q} --out-png {output.png:q}"
        " --out-fig-csv {output.fig_csv:q} {input.scalings:q} > {log:q} 2>&1"


rule eren_suite:
    input:
        cases=lambda w: stage_dir(RUN_OF[("eren_suite", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        reader=eren_reader("eren_suite"),
    output:
        results=f"{RESULTS}/{{model}}/eren_suite/{{hash}}/{{split}}.results.jsonl",
        summary=f"{RESULTS}/{{model}}/eren_suite/{{hash}}/{{split}}.summary.json",
        # EREN+score beside EREN (its summary says "skipped" when no case is held out for its threshold)
        score_results=f"{RESULTS}/{{model}}/eren_suite/{{hash}}/{{split}}.eren_score.results.jsonl",
        score_summary=f"{RESULTS}/{{model}}/eren_suite/{{hash}}/{{split}}.eren_score.summary.json",
    params:
        py=PY,
        overrides=overrides_for("eren_suite"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/eren_suite/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/eren_suite/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/eren_suite.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule eren:
    input:
        needs_splits("eval.report_split", EREN_TARGETS),
