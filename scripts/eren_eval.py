"""Stage `eren_eval`: ES / BP / EQ of EREN, the one-step baseline and the unedited reader on one data set.

    python scripts/eren_eval.py job.dataset=cfh      # CounterFact-Hard (QA);  job.dataset=fever: FEVER
    (or any name of eren.data: a QA set in EREN's format, or a fact-check set)
eren.methods may include eren_score (EREN+score, robustedit.eren.gate): its threshold is chosen on the queries
of eren.score_gate.n_calibration records held out of the scored subsample (summary: score_gate).
The notebook (stage eren_index) holds every edit of the data set; the questions of a seeded subsample of
eren.n_records records are asked (null = all). Writes <stage dir>/<dataset>.items.jsonl (one record per
method and item: input, outputs of both steps, retrieved notes, scores) and <dataset>.summary.json
(per method: ES, BP, EQ, fallback rates, own-note retrieval; plus the reader's generation count and time).
"""
from __future__ import annotations

import time
from pathlib import Path

from robustedit.errors import DataIntegrityError
from robustedit.eren.editor import SCORE_GATED
from robustedit.eren.evaluate import evaluate_methods
from robustedit.eren.gate import calibrate_or_skip
from robustedit.eren.notebook import Notebook, clean_statement
from robustedit.io import write_json, write_jsonl
from robustedit.manifest import DataStore
from robustedit.pipeline.stage import stage_app, stage_dir
from robustedit.pipeline.eren import calibration_items, dataset_items, load_encoder_from, load_reader_from
from robustedit.stages import file_name


def load_notebook(cfg: dict, dataset: str, encoder, statements: list[str]) -> Notebook:
    """The eren_index notebook of the data set, checked against the data's statements."""
    folder = stage_dir(cfg, "eren_index") / dataset
    notebook = Notebook.load(folder, encoder, faiss_device=cfg["eren"]["faiss_device"])
    expected = [clean_statement(s, f"{dataset} statement {i}") for i, s in enumerate(statements)]
    if notebook.notes != expected:
        raise DataIntegrityError(f"{folder}: the saved notes differ from {dataset}'s edit statements "
                                 f"({len(notebook)} notes, {len(expected)} statements); rerun eren_index")
    return notebook


def evaluate_dataset(cfg: dict, dataset: str, encoder, reader) -> tuple[list[dict], dict]:
    """(per-item records of every method, summary) of one data set; `reader` is a TimedReader."""
    eren = cfg["eren"]
    store = DataStore(cfg["paths"]["data"])
    task, items, statements, counts = dataset_items(cfg, store, dataset)
    notebook = load_notebook(cfg, dataset, encoder, statements)
    methods = list(eren["methods"])
    # the setting is recorded whether or not eren_score runs; its threshold comes from held-out records, and
    # with none held out (n_records null) the method is skipped, and said so
    gate = {"n_calibration": eren["score_gate"]["n_calibration"], "skipped": f"{SCORE_GATED} is not in eren.methods"}
    if SCORE_GATED in methods:
        gate.update(calibrate_or_skip(calibration_items(cfg, store, dataset), notebook))
        if "threshold" in gate:
            del gate["skipped"]
        else:
            methods.remove(SCORE_GATED)
            print(f"[eren_eval] {dataset} {SCORE_GATED} skipped: {gate['skipped']}", flush=True)
    threshold = gate.get("threshold")
    t0 = time.perf_counter()
    results = evaluate_methods(items, reader, notebook, task, methods, eren["k"], threshold)
    seconds = time.perf_counter() - t0
    records = [{"method": method, **item} for method, res in results.items() for item in res.items]
    n_queries = len({it["input"] for it in items})
    timing = {**reader.stats(), "seconds": seconds, "n_items": len(items), "n_distinct_queries": n_queries,
              "s_per_query": seconds / n_queries if n_queries else None}
    summary = {"dataset": dataset, "task": task, "reader": eren["reader"], "encoder": encoder.name,
               "index": notebook.kind, "k": eren["k"], "n_notes": len(notebook),
               "query_truncation": eren["query_truncation"], "n_records_setting": eren["n_records"], **counts,
               "score_gate": gate,
               "methods": {m: res.summary for m, res in results.items()}, "timing": timing}
    return records, summary


@stage_app("eren_eval")
def main(cfg: dict, out_dir: Path) -> None:
    dataset = cfg["job"]["dataset"]
    records, summary = evaluate_dataset(cfg, dataset, load_encoder_from(cfg), load_reader_from(cfg))
    write_jsonl(out_dir / file_name("eren_eval", "items", eren_dataset=dataset), records)
    write_json(out_dir / file_name("eren_eval", "summary", eren_dataset=dataset), summary)
    for method, s in summary["methods"].items():
        bp, eq = ("n/a", "n/a") if s["n_out_of_scope"] == 0 else (s["BP"], s["EQ"])
        print(f"[eren_eval] {dataset} {method}: ES {s['ES']}, BP {bp}, EQ {eq}", flush=True)
    t = summary["timing"]
    print(f"[eren_eval] {t['generations']} generations for {t['n_distinct_queries']} queries in {t['seconds']:.0f} s",
          flush=True)


if __name__ == "__main__":
    main()
