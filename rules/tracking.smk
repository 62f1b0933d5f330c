# Weights & Biases: log every run's config, Table 1 metrics, tables and figures once they exist.
#   snakemake --cores all wandb_log                                         # offline, under results/wandb
#   snakemake --cores all wandb_log --config overrides="tracking.mode=online"   # needs `wandb login`
# Not part of `all` (`make run` asks for it). The marker is not rebuilt when only tracking.* changes:
# add --forcerun wandb_log.

TRACKED_TABLES = [
    f"{TABLE1}.csv",
    f"{RESULTS}/tables/gate_threshold.csv",
    f"{RESULTS}/tables/eren.csv",
    f"{RESULTS}/tables/eren_scaling.csv",
]
TRACKED_FIGURES = [f"{RESULTS}/figures/gate_threshold.png", f"{RESULTS}/figures/eren_scaling.png", *ANALYSIS_FIGURES]


rule wandb_log:
    input:
        tables=TRACKED_TABLES,
        figures=TRACKED_FIGURES,
        summaries=needs_splits(
            "eval.report_split",
            [split_file(c, stage, c["eval"]["report_split"], "summary") for c in CFGS for stage in TABLE1_STAGES],
        ),
    output:
        marker=f"{RESULTS}/wandb/wandb_log.json",
    log:
        f"{RESULTS}/logs/wandb_log.log",
    benchmark:
        f"{RESULTS}/benchmarks/wandb_log.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
        runs=RUN_ARGS,
        stages=" ".join(TABLE1_STAGES),
    shell:
        "{params.py:q} scripts/wandb_log.py {params.runs} --stages {params.stages} --tables {input.tables:q}"
        " --figures {input.figures:q} --out {output.marker:q} > {log:q} 2>&1"
