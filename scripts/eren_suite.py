"""Stage `eren_suite`: EREN on the run's Table 1 robustness cases, summarised as scripts/eval_rome.py does.

    python scripts/eren_suite.py job.split=test
The notebook holds every case's edit statement (prompt + " " + target_new) at once; the queries of a
seeded subsample of eren.suite.n_cases cases (null = all) are the Table 1 items of robustedit.evaluate.items
(eren.suite.groups). Writes <stage dir>/<split>.results.jsonl (per case: its scored items) and
<split>.summary.json: {"method": "EREN", "model", "split", "include_unedited": false, "summaries":
{"post|pre/<metric>/<aggregation>": columns}, "eren": settings, diagnostics and timing}; "pre" is the
reader answering closed-book. Two protocols, as Table 1 reads them:
- generation (Table 1's generation rows): filed under `generation_match`, whose block's `metric` names EREN's
  real scorer (eren_answer_match@1, locality eren_output_unchanged@1) on the generated answers;
- teacher-forced (with eren.suite.teacher_forced): `exact_match` and `token_mean_acc`, with
  locality_agreement@1, on the answer read after the prompt EREN answered from (robustedit.eren.teacher_forced
  says exactly what is teacher-forced for a two-step reader).
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
from robustedit.eren.editor import SCORE_GATED, ErenEditor
from robustedit.eren.evaluate import evaluate_methods
from robustedit.eren.gate import LABEL, calibrate_or_skip, held_out
from robustedit.eren.notebook import Notebook
from robustedit.eren.robustness import (GENERATION_KEY, edit_statement, per_case_items, robustness_items,
                                        suite_summaries)
from robustedit.eren.teacher_forced import TF_METRICS, teacher_force
from robustedit.io import read_jsonl, write_json, write_jsonl
from robustedit.pipeline.stage import stage_app, stage_file
from robustedit.pipeline.eren import load_encoder_from, load_reader_from
from robustedit.stages import file_name

# method -> its files of the stage (robustedit.stages): EREN's are the ones Table 1 reads as the EREN row
SUITE_FILES = {"eren": ("results", "summary"), SCORE_GATED: ("score_results", "score_summary")}


def load_cases(cfg: dict, split: str) -> list[dict]:
    path = stage_file(cfg, "cases", "cases", split)
    cases = read_jsonl(path)
    if not cases:
        raise RecordError(f"{path}: no cases to evaluate")
    return cases


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
    scored = {method: result.items for method, result in results.items()}
    tf_seconds = None
    if eren["suite"]["teacher_forced"]:
        t0 = time.perf_counter()
        threshold = {SCORE_GATED: gate.get("threshold")}  # the editors that routed each method's queries
        editors = {m: ErenEditor(reader, notebook, "qa", m, eren["k"], threshold.get(m)) for m in results}
        scored = teacher_force(scored, editors, reader)
        tf_seconds = time.perf_counter() - t0
    n_queries = len({it["input"] for it in items})
    settings = {"reader": eren["reader"], "encoder": encoder.name, "query_truncation": eren["query_truncation"],
                "index": eren["index"], "k": eren["k"], "n_notes": len(notebook), "n_cases_total": len(cases),
                "n_cases_evaluated": len(chosen)}
    timing = {**reader.stats(), "seconds": seconds, "n_distinct_queries": n_queries, "s_per_query": seconds / n_queries,
              "teacher_forced_s": tf_seconds}
    out = {}
    if "skipped" in gate:
        out[SCORE_GATED] = ([], {"method": LABEL, "model": cfg["model"]["name"], "split": split, **gate})
    for method, label in (("eren", "EREN"), (SCORE_GATED, LABEL)):
        if method not in results:
            continue
        result = results[method]
        extra = {"score_gate": gate} if method == SCORE_GATED else {}
        summary = {"method": label, "model": cfg["model"]["name"], "split": split, "include_unedited": False,
                   "summaries": suite_summaries(scored[method], eren["suite"]["teacher_forced"]),
                   "eren": {**settings, **extra, "diagnostics": result.summary, "timing": timing}}
        out[method] = (per_case_items(scored[method]), summary)
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
        timing = summary["eren"]["timing"]
        for metric in (GENERATION_KEY, *TF_METRICS[:1]):
            post = summary["summaries"].get(f"post/{metric}/micro")  # what Table 1 shows, per protocol
            if post is not None:
                print(f"[eren_suite] {split} {summary['method']} {post['metric']}: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in post["columns"].items()), flush=True)
        tf = timing["teacher_forced_s"]
        print(f"[eren_suite] {timing['generations']} generations in {timing['seconds']:.0f} s (both methods)"
              + ("" if tf is None else f"; teacher forcing {tf:.0f} s"), flush=True)


if __name__ == "__main__":
    main()
