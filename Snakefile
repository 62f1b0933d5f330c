# robustedit pipeline: `snakemake --cores all` regenerates every table.
#
# Runs are Hydra override sets. By default one run on conf/config.yaml (SmolLM2-135M on CPU):
#   snakemake --cores all --config overrides="model=gemma3-270m hardware=gpu"
#   snakemake --cores all --config runs='["model=smollm2-135m", "model=gemma3-270m"]'
# `overrides` is applied to every run; each run's stage outputs live under
# results/<model>/<stage>/<hash>/ where <hash> covers exactly the config keys the stage reads.


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/stats.smk"
include: "rules/rome.smk"
include: "rules/rep.smk"
include: "rules/tables.smk"
include: "rules/analysis.smk"
include: "rules/eren.smk"
include: "rules/tracking.smk"
include: "rules/sequential.smk"


rule all:
    default_target: True
    input:
        [split_file(c, "cases", s, "cases") for c in CFGS for s in c["data"]["splits"]],
        [
            split_file(c, stage, s, "summary")
            for c in CFGS
            for s in c["data"]["splits"]
            for stage in ("eval_rome", "eval_rep")
        ],
        f"{TABLE1}.csv",
        f"{RESULTS}/tables/gate_threshold.csv",
        ANALYSIS_FIGURES,
        needs_splits("eval.report_split", EREN_TARGETS),  # the suite on eval.report_split
