# Tables gathered from the evaluations' summaries (and their per-case results, for the intervals): Table 1,
# the gate-threshold ablation (paper Figure 7) and REP's setting search.


rule table1:
    input:
        # row order: per run, the unedited model and ROME, then ROME+REP, EREN and EREN+score
        summaries=needs_splits(
            "eval.report_split",
            [
                split_file(c, stage, c["eval"]["report_split"], summary)
                for c in CFGS
                for stage, summary, _ in TABLE1_FILES
            ],
        ),
        # the per-case results beside each summary, read (not passed) by scripts/table1.py for the intervals
        results=needs_splits(
            "eval.report_split",
            [
                split_file(c, stage, c["eval"]["report_split"], results)
                for c in CFGS
                for stage, _, results in TABLE1_FILES
            ],
        ),
    output:
        csv=report(f"{TABLE1}.csv", caption="../report/table1.rst", category="Tables"),
        md=f"{TABLE1}.md",
    log:
        f"{RESULTS}/logs/table1.log",
    benchmark:
        f"{RESULTS}/benchmarks/table1.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
    shell:
        "{params.py:q} scripts/table1.py --out-csv {output.csv:q} --out-md {output.md:q} {input.summaries:q} > {log:q} 2>&1"


rule gate_threshold:
    input:
        summaries=needs_splits(
            "rep.sweep_splits",
            [
                split_file(s, "eval_rep", split, "summary")
                for _, _, s in SWEEP_CFGS
                for split in s["rep"]["sweep_splits"]
            ],
        ),
        # the per-case results beside each summary, read (not passed) by scripts/gate_threshold.py for the intervals
        results=needs_splits(
            "rep.sweep_splits",
            [
                split_file(s, "eval_rep", split, "results")
                for _, _, s in SWEEP_CFGS
                for split in s["rep"]["sweep_splits"]
            ],
        ),
        # each run's ROME evaluation on the sweep splits (and its results): the paired differences' baseline
        rome=needs_splits(
            "rep.sweep_splits",
            list(
                dict.fromkeys(
                    split_file(c, "eval_rome", split, "summary")
                    for c, _, _ in SWEEP_CFGS
                    for split in c["rep"]["sweep_splits"]
                )
            ),
        ),
        rome_results=needs_splits(
            "rep.sweep_splits",
            list(
                dict.fromkeys(
                    split_file(c, "eval_rome", split, "results")
                    for c, _, _ in SWEEP_CFGS
                    for split in c["rep"]["sweep_splits"]
                )
            ),
        ),
    output:
        csv=report(f"{RESULTS}/tables/gate_threshold.csv", caption="../report/gate_threshold.rst", category="Tables"),
        figure=report(
            f"{RESULTS}/figures/gate_threshold.png", caption="../report/gate_threshold.rst", category="Figures"
        ),
    log:
        f"{RESULTS}/logs/gate_threshold.log",
    benchmark:
        f"{RESULTS}/benchmarks/gate_threshold.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
        thresholds=[t for _, t, s in SWEEP_CFGS for split in s["rep"]["sweep_splits"]],  # one per summary
    shell:
        "{params.py:q} scripts/gate_threshold.py --out-csv {output.csv:q} --out-png {output.figure:q}"
        " --thresholds {params.thresholds:q} --summaries {input.summaries:q} --rome-summaries {input.rome:q}"
        " > {log:q} 2>&1"


rule rep_search:
    input:
        summaries=search_file("eval_rep", "summary"),
        results=search_file("eval_rep", "results"),  # read beside each summary, for the intervals
        logs=search_file("rep", "logs"),  # training diagnostics: final losses, gate fractions
        rome=search_file("eval_rome", "summary", baseline=True),
        rome_results=search_file("eval_rome", "results", baseline=True),
    output:
        csv=report(f"{RESULTS}/tables/rep_search.csv", caption="../report/rep_search.rst", category="Tables"),
        md=f"{RESULTS}/tables/rep_search.md",
    log:
        f"{RESULTS}/logs/rep_search.log",
    benchmark:
        f"{RESULTS}/benchmarks/rep_search.tsv"
    conda:
        "../env.yaml"
    params:
        py=PY,
        settings=[" ".join(p) or "(run setting)" for _, p, _ in SEARCH_CFGS],  # one label per summary
    shell:
        "{params.py:q} scripts/rep_search.py --out-csv {output.csv:q} --out-md {output.md:q}"
        " --settings {params.settings:q} --summaries {input.summaries:q} --logs {input.logs:q}"
        " --rome-summaries {input.rome:q} > {log:q} 2>&1"
