# Data construction: CounterFact cases joined to the pool, filtered to facts the model knows,
# with subject rephrases, shuffled subjects and long contexts.

rule cases:
    input:
        model="resources/models/{model}/SOURCE.json",
        manifest="resources/data/MANIFEST.json",
    output:
        cases="results/{model}/cases/{hash}/{split}.jsonl",
        stats="results/{model}/cases/{hash}/{split}.stats.json",
    params:
        overrides=overrides_for("cases"),
    log:
        "results/{model}/cases/{hash}/logs/{split}.log",
    benchmark:
        "results/{model}/cases/{hash}/benchmarks/{split}.tsv"
    resources:
        mem_mb=4000,
        gpus=lambda w: MODEL_CFGS[w.model][1]["hardware"]["gpus"],
    shell:
        "{PY} scripts/build_cases.py {params.overrides} job.split={wildcards.split} > {log} 2>&1"
