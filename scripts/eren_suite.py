"""Stage `eren_suite`: EREN on the run's Table 1 robustness cases, summarised as scripts/evaluate_edits.py does.

    python scripts/eren_suite.py job.split=test
The notebook holds every case's edit statement (prompt + " " + target_new) at once; the queries of a
seeded subsample of eren.suite.n_cases cases (null = all) are the Table 1 items of robustedit.evaluate.items
(eren.suite.groups). Writes <stage dir>/<split>.results.jsonl (per case: its scored items) and
<split>.summary.json: {"method": "EREN", "model", "split", "include_unedited": false, "summaries":
{"post|pre/<metric>/<aggregation>": columns}, "eren": settings, diagnostics and timing}. <metric> is
each of Table 1's metric names (its lookup key); the block's `metric` names the real scorer
(eren_answer_match@1, locality eren_output_unchanged@1); "pre" is the reader answering closed-book.
"""
from __future__ import annotations

import time
from pathlib import Path

from robustedit.errors import RecordError
from robustedit.eren.data import subsample
from robustedit.eren.evaluate import evaluate_methods
from robustedit.eren.notebook import Notebook
from robustedit.eren.robustness import edit_statement, per_case_items, robustness_items, suite_summary
from robustedit.io import read_jsonl, write_json, write_jsonl
from robustedit.metrics import AGGREGATIONS
from robustedit.pipeline.stage import stage_app, stage_dir
from robustedit.pipeline.eren import load_encoder_from, load_reader_from

# Table 1 looks summaries up by metric name (scripts/make_table1.py: exact_match unless --metric says
# otherwise). EREN has one generation-based scorer, filed under each of them; the block's `metric` names it.
TABLE_METRICS = ("exact_match", "token_mean_acc", "prob_compare")


def load_cases(cfg: dict, split: str) -> list[dict]:
    path = stage_dir(cfg, "cases", split) / f"{split}.jsonl"
    cases = read_jsonl(path)
    if not cases:
        raise RecordError(f"{path}: no cases to evaluate")
    return cases


def summaries(items: list[dict]) -> dict:
    blocks = {(stage, agg): suite_summary(items, agg, unedited=stage == "pre")
              for stage in ("pre", "post") for agg in AGGREGATIONS}
    return {f"{stage}/{metric}/{agg}": block for (stage, agg), block in blocks.items() for metric in TABLE_METRICS}


def evaluate_split(cfg: dict, split: str, encoder, reader) -> tuple[list[dict], dict]:
    """(per-case results, summary in evaluate_edits.py's format) of EREN on a split's cases."""
    eren = cfg["eren"]
    cases = load_cases(cfg, split)
    notebook = Notebook(encoder, index=eren["index"], faiss_device=eren["faiss_device"])
    notebook.add([edit_statement(c) for c in cases])
    chosen = subsample(cases, eren["suite"]["n_cases"], cfg["seed"], "eren_suite_cases")
    items = robustness_items(chosen, eren["suite"]["groups"], cfg["eval"]["long_id_passages"])
    t0 = time.perf_counter()
    result = evaluate_methods(items, reader, notebook, "qa", ["eren"], eren["k"])["eren"]
    seconds = time.perf_counter() - t0
    n_queries = len({it["input"] for it in items})
    summary = {"method": "EREN", "model": cfg["model"]["name"], "split": split, "include_unedited": False,
               "summaries": summaries(result.items),
               "eren": {"reader": eren["reader"], "encoder": encoder.name, "index": eren["index"], "k": eren["k"],
                        "n_notes": len(notebook), "n_cases_total": len(cases), "n_cases_evaluated": len(chosen),
                        "diagnostics": result.summary,
                        "timing": {**reader.stats(), "seconds": seconds, "n_distinct_queries": n_queries,
                                   "s_per_query": seconds / n_queries}}}
    return per_case_items(result.items), summary


@stage_app("eren_suite")
def main(cfg: dict, out_dir: Path) -> None:
    split = cfg["job"]["split"]
    per_case, summary = evaluate_split(cfg, split, load_encoder_from(cfg), load_reader_from(cfg))
    write_jsonl(out_dir / f"{split}.results.jsonl", per_case)
    write_json(out_dir / f"{split}.summary.json", summary)
    post = summary["summaries"][f"post/{TABLE_METRICS[0]}/micro"]  # what Table 1 shows
    timing = summary["eren"]["timing"]
    print(f"[eren_suite] {split}: " + ", ".join(f"{k} {v:.1f}" for k, v in post["columns"].items())
          + f"; {timing['generations']} generations in {timing['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
