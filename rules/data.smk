# Data construction: CounterFact cases joined to the pool, filtered to facts the model knows,
# with subject rephrases, shuffled subjects and long contexts.


rule cases:
    input:
        model=MODEL_SOURCE,
        manifest=DATA_MANIFEST,
    output:
        cases=out("cases", "cases"),
        stats=out("cases", "stats"),
    log:
        job_file("cases", "logs"),
    benchmark:
        job_file("cases", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("cases"),
    shell:
        stage_shell("cases")
