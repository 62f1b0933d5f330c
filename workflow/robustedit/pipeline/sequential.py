"""The sequential_eval stage (scripts/sequential_eval.py): eval.sequential's methods, each editing the split's
cases one after another (robustedit.sequential), with the suite scored teacher-forced after every
checkpoint N. Its results hold one record per (method, N, case); its summary every metric x aggregation
per method and N, the seeded edit order and each method's seconds (editing, scoring)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from robustedit.evaluate import evaluate_cases
from robustedit.io import read_json, read_jsonl, write_json, write_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.evaluate import summaries
from robustedit.pipeline.sequential_config import at_layer, method_layers, moment_layers
from robustedit.pipeline.stage import model_dir, stage_file
from robustedit.rome.hparams import ROMEHyperParams
from robustedit.seeding import derive_seed
from robustedit.sequential import SEQUENTIAL_EDITORS, edit_counts, edit_order, run_sequence
from robustedit.stages import file_name

def make_editor(cfg: dict, method: str, lm, templates, moments: dict, device):
    seq = cfg["eval"]["sequential"]
    # one edit per v* optimisation: a batch of cases would be optimised on the same, not the edited, model
    hp = ROMEHyperParams.from_config({**cfg["rome"], "batch_cases": 1})
    extra = {"memit": dict(mom2_update_weight=seq["memit"]["mom2_update_weight"]),
             "alphaedit": dict(nullspace_threshold=seq["alphaedit"]["nullspace_threshold"],
                               l2=seq["alphaedit"]["l2"])}.get(method, {})
    layers = tuple(method_layers(cfg, method))
    return SEQUENTIAL_EDITORS[method](tok=lm.tokenizer, arch=lm.arch, templates=templates, hp=hp, device=device,
                                      layers=layers, moments={x: moments[x] for x in layers}, **extra)


def timed_sequence(lm, editor, ordered: list[dict], counts: list[int], unedited: list[dict],
                   suite: dict) -> tuple[dict[int, list[dict]], dict]:
    """run_sequence with the suite as its score (the unedited records as every N's "pre"), and the seconds
    spent editing and scoring."""
    spent = {"score": 0.0}

    def score(model, done: list[dict]) -> list[dict]:
        start = time.time()
        per_case = evaluate_cases(model, lm.tokenizer, lm.arch, done, None, pre_from=unedited[:len(done)], **suite)
        spent["score"] += time.time() - start
        return per_case

    start = time.time()
    per_n = run_sequence(lm.model, lm.arch, editor, ordered, counts, score)
    return per_n, {"edit": time.time() - start - spent["score"], "score": spent["score"]}


def sequential_split(cfg: dict, out_dir: Path) -> None:
    split, hw, seq = cfg["job"]["split"], cfg["hardware"], cfg["eval"]["sequential"]
    cases = read_jsonl(stage_file(cfg, "cases", "cases"))
    order = edit_order([c["case_id"] for c in cases], derive_seed(cfg["seed"], "sequential order", split))
    ordered = [cases[i] for i in order]
    counts = edit_counts(seq["n_edits"], len(cases))
    templates = read_json(stage_file(cfg, "templates", "templates"))
    device = resolve_device(hw["device"])
    moments = {x: torch.load(stage_file(at_layer(cfg, x), "stats", "moment"), weights_only=True)["moment"]
               for x in moment_layers(cfg)}
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    ev = cfg["eval"]
    suite = dict(batch_size=hw["batch_size"], device=device, max_length=ev["max_length"],
                 long_id_passages=ev["long_id_passages"])
    # every editor first, so that a method the model does not support fails before any computation
    editors = {method: make_editor(cfg, method, lm, templates, moments, device) for method in seq["methods"]}
    start = time.time()
    # every N's reference: the cases the largest checkpoint edits, scored on the unedited model
    unedited = evaluate_cases(lm.model, lm.tokenizer, lm.arch, ordered[:counts[-1]], None, **suite)
    seconds: dict = {"unedited": time.time() - start}
    records, summary = [], {}
    for method, editor in editors.items():
        per_n, seconds[method] = timed_sequence(lm, editor, ordered, counts, unedited, suite)
        summary[method] = {str(n): summaries(per_case) for n, per_case in per_n.items()}
        records += [{"method": method, "n_edits": n, **case} for n, per_case in per_n.items() for case in per_case]
        print(f"[sequential] {method}: " + ", ".join(
            f"N={n} success {summary[method][str(n)]['post/exact_match/micro']['columns']['success']:.1f}"
            for n in per_n) + f" ({seconds[method]['edit']:.0f} s editing, {seconds[method]['score']:.0f} s "
            f"scoring)", flush=True)
    write_jsonl(out_dir / file_name("sequential_eval", "results", split=split), records)
    write_json(out_dir / file_name("sequential_eval", "summary", split=split),
               {"model": cfg["model"]["name"], "split": split, "order": [c["case_id"] for c in ordered],
                "n_edits": counts, "layers": {m: method_layers(cfg, m) for m in seq["methods"]},
                "seconds": seconds, "summaries": summary})
