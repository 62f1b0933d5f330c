# Analysis figures (REP paper Figures 3-5): per run, a model-loading stage writes CSVs under
# results/<model>/fig_*/<hash>/ for analysis.split; a plotting rule gathers every run into results/figures/.

RUN_LABELS = _run_labels()
ANALYSIS_FIGURES = [
    f"{RESULTS}/figures/{name}.png" for name in ("key_similarity", "key_pca", "unrelated_keys", "value_norms")
]


rule fig_keys:
    input:
        cases=upstream("fig_keys", "cases", "cases"),
        moment=upstream("fig_keys", "stats", "moment"),
    output:
        similarity=out("fig_keys", "similarity"),
        pca=out("fig_keys", "pca"),
    log:
        job_file("fig_keys", "logs"),
    benchmark:
        job_file("fig_keys", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("fig_keys"),
    shell:
        stage_shell("fig_keys")


rule fig_unrelated:
    input:
        cases=upstream("fig_unrelated", "cases", "cases"),
        moment=upstream("fig_unrelated", "stats", "moment"),
        manifest=DATA_MANIFEST,
    output:
        top=out("fig_unrelated", "top"),
        hist=out("fig_unrelated", "hist"),
    log:
        job_file("fig_unrelated", "logs"),
    benchmark:
        job_file("fig_unrelated", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("fig_unrelated"),
    shell:
        stage_shell("fig_unrelated")


rule fig_values:
    input:
        cases=upstream("fig_values", "cases", "cases"),
        edits=upstream("fig_values", "rome", "edits"),
        diagnostics=upstream("fig_values", "rome", "diagnostics"),
    output:
        values=out("fig_values", "values"),
    log:
        job_file("fig_values", "logs"),
    benchmark:
        job_file("fig_values", "benchmarks")
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    params:
        py=PY,
        overrides=overrides_for("fig_values"),
    shell:
        stage_shell("fig_values")


rule plot_keys:
    input:
        similarity=fig_inputs("fig_keys", "similarity"),
        pca=fig_inputs("fig_keys", "pca"),
    output:
        png=report(f"{RESULTS}/figures/key_similarity.png", caption="../report/key_similarity.rst", category="Figures"),
        csv=f"{RESULTS}/figures/key_similarity.csv",
        pca_png=report(f"{RESULTS}/figures/key_pca.png", caption="../report/key_pca.rst", category="Figures"),
        pca_csv=f"{RESULTS}/figures/key_pca.csv",
    log:
        f"{RESULTS}/logs/plot_keys.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_keys.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
        runs=" ".join(shlex.quote(r) for r in RUN_LABELS),
    shell:
        "{params.py:q} scripts/plot.py keys --similarity {input.similarity:q} --pca {input.pca:q} --runs {params.runs}"
        " --out-png {output.png:q} --out-csv {output.csv:q} --out-pca-png {output.pca_png:q} --out-pca-csv {output.pca_csv:q}"
        " > {log:q} 2>&1"


rule plot_unrelated:
    input:
        top=fig_inputs("fig_unrelated", "top"),
        hist=fig_inputs("fig_unrelated", "hist"),
        similarity=fig_inputs("fig_keys", "similarity"),  # the subjects' own variants, for comparison
    output:
        png=report(f"{RESULTS}/figures/unrelated_keys.png", caption="../report/unrelated_keys.rst", category="Figures"),
        csv=f"{RESULTS}/figures/unrelated_keys.csv",
        hist_csv=f"{RESULTS}/figures/unrelated_keys_hist.csv",
    log:
        f"{RESULTS}/logs/plot_unrelated.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_unrelated.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
        runs=" ".join(shlex.quote(r) for r in RUN_LABELS),
    shell:
        "{params.py:q} scripts/plot.py unrelated --top {input.top:q} --hist {input.hist:q}"
        " --similarity {input.similarity:q} --runs {params.runs}"
        " --out-png {output.png:q} --out-csv {output.csv:q} --out-hist-csv {output.hist_csv:q} > {log:q} 2>&1"


rule plot_values:
    input:
        values=fig_inputs("fig_values", "values"),
    output:
        png=report(f"{RESULTS}/figures/value_norms.png", caption="../report/value_norms.rst", category="Figures"),
        csv=f"{RESULTS}/figures/value_norms.csv",
    log:
        f"{RESULTS}/logs/plot_values.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_values.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
        runs=" ".join(shlex.quote(r) for r in RUN_LABELS),
    shell:
        "{params.py:q} scripts/plot.py values --values {input.values:q} --runs {params.runs}"
        " --out-png {output.png:q} --out-csv {output.csv:q} > {log:q} 2>&1"


rule figures:
    input:
        ANALYSIS_FIGURES,
