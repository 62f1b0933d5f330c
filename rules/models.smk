# Convert each configured model's source into resources/models/<name>/ (once; cached).


rule prepare_model:
    output:
        config=f"{MODELS}/{{model}}/config.json",
        source=MODEL_SOURCE,
    log:
        f"{RESULTS}/logs/prepare_model/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_model/{{model}}.tsv"
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
    params:
        py=PY,
        # only the model group and the shared folders: a hardware or data override must not re-convert
        # (and so re-run) everything
        overrides=lambda w: " ".join(
            shlex.quote(o) for o in (f"model={w.model}", f"paths.models={MODELS}", f"paths.data={DATA}")
        ),
    shell:
        f"{MODEL_JOB} scripts/prepare_model.py {{params.overrides}} > {{log:q}} 2>&1"


rule prepare_models:
    input:
        [MODEL_SOURCE.format(model=name) for name in MODEL_CFGS],
