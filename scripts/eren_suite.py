"""Stage `eren_suite`: EREN on the run's Table 1 robustness cases, summarised as scripts/eval_rome.py does.

    python scripts/eren_suite.py job.split=test
The notebook holds every case's edit statement (prompt + " " + target_new) at once; the queries of a
seeded subsample of eren.suite.n_cases cases (null = all) are the Table 1 items of robustedit.evaluate.items
(eren.suite.groups). Writes <stage dir>/<split>.results.jsonl (per case: its scored items) and
<split>.summary.json: {"method": "EREN", "model", "split", "include_unedited": false, "summaries":
{"post|pre/<metric>/<aggregation>": columns}, "eren": settings, diagnostics and timing}. <metric> is
each of Table 1's metric names (its lookup key); the block's `metric` names the real scorer
(eren_answer_match@1, locality eren_output_unchanged@1); "pre" is the reader answering closed-book.
EREN+score (robustedit.eren.gate) beside it, in the same format: <split>.eren_score.results.jsonl and
<split>.eren_score.summary.json (method "EREN+score"; its threshold, in eren.score_gate, is chosen on the
queries of eren.score_gate.n_calibration cases held out of the evaluated subsample). It reuses EREN's
generations, so it costs no reader time. With no case held out (eren.suite.n_cases null, or as many as the
split has) its summary is {"method": "EREN+score", "model", "split", "skipped": reason} and its results empty.
"""
from __future__ import annotations

import time
from pathlib import Path

from robustedit.errors import RecordError
from robustedit.eren.data import subsample
from robustedit.eren.editor import SCORE_GATED
from robustedit.eren.evaluate import evaluate_methods
from robustedit.eren.gate import LABEL, calibrate_or_skip, held_out
from robustedit.eren.notebook import Notebook
from robustedit.eren.robustness import edit_statement, per_case_items, robustness_items, suite_summary
from robustedit.io import read_jsonl, write_json, write_jsonl
from robustedit.metrics import AGGREGATIONS
from robustedit.pipeline.stage import stage_app, stage_file
from robustedit.pipeline.eren import load_encoder_from, load_reader_from
from robustedit.stages import file_name

# Table 1 looks summaries up by metric name (scripts/table1.py: exact_match unless --metric says
# otherwise, generation_match for the generation protocol). EREN has one generation-based scorer, filed under
# each of them; the block's `metric` names it, so Table 1 lists EREN under the generation protocol only.
TABLE_METRICS = ("exact_match", "token_mean_acc", "prob_compare", "generation_match")


# method -> its files of the stage (robustedit.stages): EREN's are the ones Table 1 reads as the EREN row
SUITE_FILES = {"eren": ("results", "summary"), SCORE_GATED: ("score_results", "score_summary")}


def load_cases(cfg: dict, split: str) -> list[dict]:
    path = stage_file(cfg, "cases", "cases", split)
    cases = read_jsonl(path)
    if not cases:
        raise RecordError(f"{path}: no cases to evaluate")
    return cases


def summaries(items: list[dict]) -> dict:
    blocks = {(stage, agg): suite_summary(items, agg, unedited=stage == "pre")
              for stage in ("pre", "post") for agg in AGGREGATIONS}
    return {f"{stage}/{metric}/{agg}": block for (stage, agg), block in blocks.items() for metric in TABLE_METRICS}


def evaluate_split(cfg: dict, split: str, encoder, reader) -> dict[str, tuple[list[dict], dict]]:
    """method -> (per-case results, summary in eval_rome.py's format) of EREN and EREN+score on a split."""
    eren = cfg["eren"]
    cases = load_cases(cfg, split)
    notebook = Notebook(encoder, index=eren["index"], faiss_device=eren["faiss_device"])
    notebook.add([edit_statement(c) for c in cases])
    chosen = subsample(cases, eren["suite"]["n_cases"], cfg["seed"], "eren_suite_cases")
    groups, passages = eren["suite"]["groups"], cfg["eval"]["long_id_passages"]
    items = robustness_items(chosen, groups, passages)
    held = held_out(cases, chosen, eren["score_gate"]["n_calibration"], cfg["seed"], "eren_score_calibration")
    gate = calibrate_or_skip(robustness_items(held, groups, passages), notebook)
    methods = ["eren"] if "skipped" in gate else ["eren", SCORE_GATED]
    t0 = time.perf_counter()
    results = evaluate_methods(items, reader, notebook, "qa", methods, eren["k"], gate.get("threshold"))
    seconds = time.perf_counter() - t0
    n_queries = len({it["input"] for it in items})
    settings = {"reader": eren["reader"], "encoder": encoder.name, "query_truncation": eren["query_truncation"],
                "index": eren["index"], "k": eren["k"], "n_notes": len(notebook), "n_cases_total": len(cases),
                "n_cases_evaluated": len(chosen)}
    timing = {**reader.stats(), "seconds": seconds, "n_distinct_queries": n_queries, "s_per_query": seconds / n_queries}
    out = {}
    if "skipped" in gate:
        out[SCORE_GATED] = ([], {"method": LABEL, "model": cfg["model"]["name"], "split": split, **gate})
    for method, label in (("eren", "EREN"), (SCORE_GATED, LABEL)):
        if method not in results:
            continue
        result = results[method]
        extra = {"score_gate": gate} if method == SCORE_GATED else {}
        summary = {"method": label, "model": cfg["model"]["name"], "split": split, "include_unedited": False,
                   "summaries": summaries(result.items),
                   "eren": {**settings, **extra, "diagnostics": result.summary, "timing": timing}}
        out[method] = (per_case_items(result.items), summary)
    return out


@stage_app("eren_suite")
def main(cfg: dict, out_dir: Path) -> None:
    split = cfg["job"]["split"]
    results = evaluate_split(cfg, split, load_encoder_from(cfg), load_reader_from(cfg))
    for method, (per_case, summary) in results.items():
        results_key, summary_key = SUITE_FILES[method]
        write_jsonl(out_dir / file_name("eren_suite", results_key, split=split), per_case)
        write_json(out_dir / file_name("eren_suite", summary_key, split=split), summary)
        if "skipped" in summary:
            print(f"[eren_suite] {split} {summary['method']} skipped: {summary['skipped']}", flush=True)
            continue
        post = summary["summaries"][f"post/{TABLE_METRICS[0]}/micro"]  # what Table 1 shows
        timing = summary["eren"]["timing"]
        print(f"[eren_suite] {split} {summary['method']}: "
              + ", ".join(f"{k} {v:.1f}" for k, v in post["columns"].items())
              + f"; {timing['generations']} generations in {timing['seconds']:.0f} s (both methods)", flush=True)


if __name__ == "__main__":
    main()
