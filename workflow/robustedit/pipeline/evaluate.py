"""Evaluate a split's ROME edits (optionally wrapped, e.g. with REP adaptors) and write its results and
summary: shared by the eval_rome (scripts/eval_rome.py) and eval_rep (scripts/eval_rep.py) stages."""
from __future__ import annotations

from pathlib import Path

import torch

from robustedit.edits import RankOneEdit
from robustedit.evaluate import evaluate_cases, summarise
from robustedit.evaluate.generation import GenerationSpec
from robustedit.io import read_jsonl, write_json, write_jsonl
from robustedit.metrics import AGGREGATIONS
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.stage import model_dir, stage_file
from robustedit.stages import EVALUATED

SUMMARY_METRICS = ("exact_match", "token_mean_acc", "prob_compare")  # teacher-forced; locality_agreement@1
GENERATION_METRICS = ("generation_match", "generation_span")  # generation; locality generation_unchanged@1


def generation_spec(eval_cfg: dict, split: str) -> GenerationSpec | None:
    """The stop rule of eval.generation, or None when the split is not generated for (off, or skipped)."""
    gen = eval_cfg["generation"]
    if not gen["enabled"] or split in gen["skip_splits"]:
        return None
    return GenerationSpec(gen["margin"], tuple(gen["stop_strings"]))


def load_edits(path: Path, cases: list[dict]) -> list[RankOneEdit]:
    saved = torch.load(path, weights_only=True)
    if saved["case_ids"] != [c["case_id"] for c in cases]:
        raise ValueError(f"{path}: edits do not match the cases file (rerun the rome stage)")
    return [RankOneEdit(saved["layer"], u, v) for u, v in zip(saved["u"], saved["v"])]


def case_chunks(n_cases: int, chunk_cases: int | None) -> list[range]:
    """Consecutive ranges of at most chunk_cases cases (one range of all cases for None)."""
    if chunk_cases is not None and chunk_cases < 1:
        raise ValueError(f"chunk_cases={chunk_cases} must be >= 1")
    step = chunk_cases or max(n_cases, 1)
    return [range(lo, min(lo + step, n_cases)) for lo in range(0, n_cases, step)]


def evaluate_in_chunks(lm, cases: list[dict], edits: list, device, batch_size: int, eval_cfg: dict,
                       edit_batch_fn=None, pre: list[dict] | None = None, chunk_cases: int | None = None,
                       spec: GenerationSpec | None = None) -> list[dict]:
    """evaluate_cases (batched, with alternatives) over consecutive chunks of cases, concatenated; with a
    generation `spec` each item also carries its generation-protocol fields (continued from the teacher-forced
    forward's cache)."""
    per_case: list[dict] = []
    for part in case_chunks(len(cases), chunk_cases):
        edit_arg = edit_batch_fn(lm, edits, device, part) if edit_batch_fn else edits[part.start: part.stop]
        chunk, chunk_pre = cases[part.start: part.stop], pre[part.start: part.stop] if pre is not None else None
        per_case += evaluate_cases(lm.model, lm.tokenizer, lm.arch, chunk, edit_arg, batch_size, device,
                                   mode="batched", alternatives=True, max_length=eval_cfg["max_length"],
                                   pre_from=chunk_pre, long_id_passages=eval_cfg["long_id_passages"], generation=spec)
        del edit_arg  # free this chunk's stacked edits before the next chunk builds its own
    return per_case


def summaries(per_case: list[dict]) -> dict:
    """Every metric x aggregation x phase; the generation metrics when the items carry them."""
    out = {f"{stage}/{metric}/{agg}": summarise(per_case, metric, agg, stage=stage)
           for stage in ("pre", "post") for metric in SUMMARY_METRICS for agg in AGGREGATIONS}
    if per_case and "generation" in per_case[0]:
        out.update({f"{stage}/{metric}/{agg}": summarise(per_case, metric, agg, stage=stage,
                                                         locality_metric="generation_unchanged")
                    for stage in ("pre", "post") for metric in GENERATION_METRICS for agg in AGGREGATIONS})
    return out


def evaluate_split(cfg: dict, edits_path: Path, out_dir: Path, method: str, edit_batch_fn=None,
                   pre_from: Path | None = None, include_unedited: bool = True,
                   chunk_cases: int | None = None) -> None:
    """Evaluate one split; `edit_batch_fn(lm, edits, device, part)` wraps the ROME edits of the cases in
    `part` (a range over all cases) into an EditBatch (e.g. with REP adaptors); `pre_from` is an earlier
    results.jsonl of the same cases whose unedited scores are reused. `chunk_cases` evaluates that many
    cases at a time (None = all at once), so that only one chunk's EditBatch is ever built."""
    split, hw = cfg["job"]["split"], cfg["hardware"]
    cases = read_jsonl(stage_file(cfg, "cases", "cases", split))
    edits = load_edits(edits_path, cases)
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device = resolve_device(hw["device"])
    per_case = evaluate_in_chunks(lm, cases, edits, device, hw["batch_size"], cfg["eval"], edit_batch_fn,
                                  read_jsonl(pre_from) if pre_from else None, chunk_cases,
                                  generation_spec(cfg["eval"], split))
    # the evaluation stages' file names (eval_rome, eval_rep: robustedit.stages.EVALUATED)
    write_jsonl(out_dir / EVALUATED["results"].format(split=split), per_case)
    write_json(out_dir / EVALUATED["summary"].format(split=split),
               {"method": method, "model": cfg["model"]["name"], "split": split, "include_unedited": include_unedited,
                "summaries": summaries(per_case)})
    post = summarise(per_case, "exact_match", "micro")  # Table 1's metric (scripts/table1.py)
    print(f"[eval] {method} {split}: " + ", ".join(f"{k} {v:.1f}" for k, v in post["columns"].items()), flush=True)
