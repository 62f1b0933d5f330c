# ROME edits per case and their batched evaluation.


rule rome:
    input:
        cases=upstream("rome", "cases", "cases"),
        moment=upstream("rome", "stats", "moment"),
        templates=upstream("rome", "templates", "templates"),
    output:
        edits=out("rome", "edits"),
        diagnostics=out("rome", "diagnostics"),
    log:
        job_file("rome", "logs"),
    benchmark:
        job_file("rome", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("rome"),
    shell:
        stage_shell("rome")


rule eval_rome:
    input:
        cases=upstream("eval_rome", "cases", "cases"),
        edits=upstream("eval_rome", "rome", "edits"),
    output:
        results=out("eval_rome", "results"),
        summary=out("eval_rome", "summary"),
    log:
        job_file("eval_rome", "logs"),
    benchmark:
        job_file("eval_rome", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("eval_rome"),
    shell:
        stage_shell("eval_rome")
