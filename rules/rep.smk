# REP adaptors per case, ROME+REP evaluation, and REP's key diagnostics.


rule rep:
    input:
        cases=upstream("rep", "cases", "cases"),
        templates=upstream("rep", "templates", "templates"),
        edits=upstream("rep", "rome", "edits"),
        moment=upstream("rep", "stats", "moment"),  # read by the whitened objective
    output:
        adaptors=out("rep", "adaptors"),
        logs=out("rep", "logs"),
    log:
        job_file("rep", "logs"),
    benchmark:
        job_file("rep", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("rep"),
    shell:
        stage_shell("rep")


rule eval_rep:
    input:
        cases=upstream("eval_rep", "cases", "cases"),
        edits=upstream("eval_rep", "rome", "edits"),
        adaptors=upstream("eval_rep", "rep", "adaptors"),
        unedited=upstream("eval_rep", "eval_rome", "results"),
    output:
        results=out("eval_rep", "results"),
        summary=out("eval_rep", "summary"),
    log:
        job_file("eval_rep", "logs"),
    benchmark:
        job_file("eval_rep", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("eval_rep"),
    shell:
        stage_shell("eval_rep")


# REP key diagnostics (not in `all`): per evaluated item, ROME's transfer ratio uᵀa / uᵀk* before and after the
# case's adaptor, joined with eval_rome's and eval_rep's exact match. `snakemake rep_diagnostics_all` builds it
# on eval.report_split of every run.
rule rep_diagnostics:
    input:
        cases=upstream("rep_diagnostics", "cases", "cases"),
        edits=upstream("rep_diagnostics", "rome", "edits"),
        adaptors=upstream("rep_diagnostics", "rep", "adaptors"),
        rome=upstream("rep_diagnostics", "eval_rome", "results"),
        rep=upstream("rep_diagnostics", "eval_rep", "results"),
    output:
        transfer=out("rep_diagnostics", "transfer"),
        summary=out("rep_diagnostics", "summary"),
        figure=out("rep_diagnostics", "figure"),
        oracle=out("rep_diagnostics", "oracle"),
        oracle_summary=out("rep_diagnostics", "oracle_summary"),
    log:
        job_file("rep_diagnostics", "logs"),
    benchmark:
        job_file("rep_diagnostics", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("rep_diagnostics"),
    shell:
        stage_shell("rep_diagnostics")


rule rep_diagnostics_all:
    input:
        needs_splits(
            "eval.report_split",
            [
                split_file(c, "rep_diagnostics", c["eval"]["report_split"], key)
                for c in CFGS
                for key in ("transfer", "summary", "figure", "oracle", "oracle_summary")
            ],
        ),
