# ROME's ingredients that do not depend on the cases: the second moment C and the context templates.

rule stats:
    input:
        model=f"{MODELS}/{{model}}/SOURCE.json",
    output:
        moment=f"{RESULTS}/{{model}}/stats/{{hash}}/mom2.pt",
        stats=f"{RESULTS}/{{model}}/stats/{{hash}}/stats.json",
    params:
        py=PY,
        overrides=overrides_for("stats"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/stats/{{hash}}/logs/stats.log",
    benchmark:
        f"{RESULTS}/{{model}}/stats/{{hash}}/benchmarks/stats.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/compute_stats.py {params.overrides} > {log:q} 2>&1"


rule templates:
    input:
        model=f"{MODELS}/{{model}}/SOURCE.json",
    output:
        templates=f"{RESULTS}/{{model}}/templates/{{hash}}/templates.json",
    params:
        py=PY,
        overrides=overrides_for("templates"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/templates/{{hash}}/logs/templates.log",
    benchmark:
        f"{RESULTS}/{{model}}/templates/{{hash}}/benchmarks/templates.tsv"
    resources:
        mem_mb=4000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/make_templates.py {params.overrides} > {log:q} 2>&1"
