# Data construction: CounterFact cases joined to the pool, filtered to facts the model knows,
# with subject rephrases, shuffled subjects and long contexts.

rule cases:
    input:
        model=f"{MODELS}/{{model}}/SOURCE.json",
        manifest=f"{DATA}/MANIFEST.json",
    output:
        cases=f"{RESULTS}/{{model}}/cases/{{hash}}/{{split}}.jsonl",
        stats=f"{RESULTS}/{{model}}/cases/{{hash}}/{{split}}.stats.json",
    params:
        py=PY,
        overrides=overrides_for("cases"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/cases/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/cases/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/build_cases.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"
