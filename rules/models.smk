# Convert each configured model's source into resources/models/<name>/ (once; cached).

rule prepare_model:
    output:
        config=f"{MODELS}/{{model}}/config.json",
        source=f"{MODELS}/{{model}}/SOURCE.json",
    params:
        py=PY,
        overrides=lambda w: " ".join(shlex.quote(o) for o in MODEL_CFGS[w.model][0]),
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/prepare_model/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_model/{{model}}.tsv"
    resources:
        mem_mb=4000,
    shell:
        "{params.py} scripts/prepare_model.py {params.overrides} > {log} 2>&1"


rule prepare_models:
    input:
        [f"{MODELS}/{name}/SOURCE.json" for name in MODEL_CFGS],
