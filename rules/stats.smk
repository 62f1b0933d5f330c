# ROME's ingredients that do not depend on the cases: the second moment C and the context templates.


rule stats:
    input:
        model=MODEL_SOURCE,
    output:
        moment=out("stats", "moment"),
        stats=out("stats", "stats"),
    log:
        job_file("stats", "logs"),
    benchmark:
        job_file("stats", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("stats"),
    shell:
        stage_shell("stats")


rule templates:
    input:
        model=MODEL_SOURCE,
    output:
        templates=out("templates", "templates"),
    log:
        job_file("templates", "logs"),
    benchmark:
        job_file("templates", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("templates"),
    shell:
        stage_shell("templates")
