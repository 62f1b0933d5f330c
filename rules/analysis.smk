# Analysis figures (REP paper Figures 3-5): per run, a model-loading stage writes CSVs under
# results/<model>/fig_*/<hash>/ for analysis.split; a plotting rule gathers every run into results/figures/.

RUN_LABELS = _run_labels()
FIG_FILES = {  # per-run stage outputs: stage -> file suffixes
    "fig_keys": ("similarity.csv", "pca.csv"),
    "fig_unrelated": ("top_prefixes.csv", "scan_hist.csv"),
    "fig_values": ("values.csv",),
}
ANALYSIS_FIGURES = [f"{RESULTS}/figures/{name}.png" for name in ("key_similarity", "key_pca", "unrelated_keys",
                                                                 "value_norms")]


rule fig_keys:
    input:
        cases=lambda w: stage_dir(RUN_OF[("fig_keys", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        moment=lambda w: stage_dir(RUN_OF[("fig_keys", w.model, w.hash)], "stats") / "mom2.pt",
    output:
        similarity=f"{RESULTS}/{{model}}/fig_keys/{{hash}}/{{split}}.similarity.csv",
        pca=f"{RESULTS}/{{model}}/fig_keys/{{hash}}/{{split}}.pca.csv",
    params:
        py=PY,
        overrides=overrides_for("fig_keys"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/fig_keys/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/fig_keys/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/fig_keys.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule fig_unrelated:
    input:
        cases=lambda w: stage_dir(RUN_OF[("fig_unrelated", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        moment=lambda w: stage_dir(RUN_OF[("fig_unrelated", w.model, w.hash)], "stats") / "mom2.pt",
        manifest=f"{DATA}/MANIFEST.json",
    output:
        top=f"{RESULTS}/{{model}}/fig_unrelated/{{hash}}/{{split}}.top_prefixes.csv",
        hist=f"{RESULTS}/{{model}}/fig_unrelated/{{hash}}/{{split}}.scan_hist.csv",
    params:
        py=PY,
        overrides=overrides_for("fig_unrelated"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/fig_unrelated/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/fig_unrelated/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/fig_unrelated.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule fig_values:
    input:
        cases=lambda w: stage_dir(RUN_OF[("fig_values", w.model, w.hash)], "cases") / f"{w.split}.jsonl",
        edits=lambda w: stage_dir(RUN_OF[("fig_values", w.model, w.hash)], "rome") / f"{w.split}.edits.pt",
        diagnostics=lambda w: stage_dir(RUN_OF[("fig_values", w.model, w.hash)], "rome") / f"{w.split}.rome.jsonl",
    output:
        values=f"{RESULTS}/{{model}}/fig_values/{{hash}}/{{split}}.values.csv",
    params:
        py=PY,
        overrides=overrides_for("fig_values"),
    conda:
        "../env.yaml"
    threads: MODEL_THREADS
    log:
        f"{RESULTS}/{{model}}/fig_values/{{hash}}/logs/{{split}}.log",
    benchmark:
        f"{RESULTS}/{{model}}/fig_values/{{hash}}/benchmarks/{{split}}.tsv"
    resources:
        mem_mb=6000,
        gpu=gpu_count,  # the resource snakemake-executor-plugin-slurm reads (--gpus)
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q} scripts/fig_values.py {params.overrides} job.split={wildcards.split:q} > {log:q} 2>&1"


rule plot_keys:
    input:
        similarity=fig_inputs("fig_keys", "similarity.csv"),
        pca=fig_inputs("fig_keys", "pca.csv"),
    output:
        png=report(f"{RESULTS}/figures/key_similarity.png", caption="../report/key_similarity.rst", category="Figures"),
        csv=f"{RESULTS}/figures/key_similarity.csv",
        pca_png=report(f"{RESULTS}/figures/key_pca.png", caption="../report/key_pca.rst", category="Figures"),
        pca_csv=f"{RESULTS}/figures/key_pca.csv",
    params:
        py=PY,
        runs=" ".join(shlex.quote(r) for r in RUN_LABELS),
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/plot_keys.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_keys.tsv"
    shell:
        "{params.py:q} scripts/fig_plot.py keys --similarity {input.similarity:q} --pca {input.pca:q} --runs {params.runs}"
        " --out-png {output.png:q} --out-csv {output.csv:q} --out-pca-png {output.pca_png:q} --out-pca-csv {output.pca_csv:q}"
        " > {log:q} 2>&1"


rule plot_unrelated:
    input:
        top=fig_inputs("fig_unrelated", "top_prefixes.csv"),
        hist=fig_inputs("fig_unrelated", "scan_hist.csv"),
        similarity=fig_inputs("fig_keys", "similarity.csv"),  # the subjects' own variants, for comparison
    output:
        png=report(f"{RESULTS}/figures/unrelated_keys.png", caption="../report/unrelated_keys.rst",
                   category="Figures"),
        csv=f"{RESULTS}/figures/unrelated_keys.csv",
        hist_csv=f"{RESULTS}/figures/unrelated_keys_hist.csv",
    params:
        py=PY,
        runs=" ".join(shlex.quote(r) for r in RUN_LABELS),
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/plot_unrelated.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_unrelated.tsv"
    shell:
        "{params.py:q} scripts/fig_plot.py unrelated --top {input.top:q} --hist {input.hist:q}"
        " --similarity {input.similarity:q} --runs {params.runs}"
        " --out-png {output.png:q} --out-csv {output.csv:q} --out-hist-csv {output.hist_csv:q} > {log:q} 2>&1"


rule plot_values:
    input:
        values=fig_inputs("fig_values", "values.csv"),
    output:
        png=report(f"{RESULTS}/figures/value_norms.png", caption="../report/value_norms.rst", category="Figures"),
        csv=f"{RESULTS}/figures/value_norms.csv",
    params:
        py=PY,
        runs=" ".join(shlex.quote(r) for r in RUN_LABELS),
    conda:
        "../env.yaml"
    log:
        f"{RESULTS}/logs/plot_values.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_values.tsv"
    shell:
        "{params.py:q} scripts/fig_plot.py values --values {input.values:q} --runs {params.runs}"
        " --out-png {output.png:q} --out-csv {output.csv:q} > {log:q} 2>&1"


rule figures:
    input:
        ANALYSIS_FIGURES,
