"""The sequential_eval stage (scripts/sequential_eval.py): eval.sequential's methods, each editing the split's
cases one after another (robustedit.sequential), with the suite scored teacher-forced after every
checkpoint N. Its results hold one record per (method, N, case); its summary every metric x aggregation
per method and N, the perplexity probe's per-line losses (unedited and per method and N), the seeded edit
order and each method's seconds (editing, scoring)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from robustedit.checkpoints import CasePieces, checkpoint_stamp
from robustedit.evaluate import evaluate_cases
from robustedit.io import read_json, read_jsonl, write_json, write_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.evaluate import summaries
from robustedit.pipeline.sequential_config import at_layer, method_layers, moment_layers
from robustedit.pipeline.stage import model_dir, stage_file
from robustedit.pipeline.wikitext import stats_texts
from robustedit.rome.hparams import ROMEHyperParams
from robustedit.rome.stats import select_documents
from robustedit.seeding import derive_seed
from robustedit.sequential import SEQUENTIAL_EDITORS, edit_counts, edit_order, run_sequence
from robustedit.sequential.probe import held_out_lines, line_losses
from robustedit.stages import file_name

UNEDITED = "unedited"  # the first resume piece and the summary's key of the unedited reference


def probe_lines(cfg: dict, cases: list[dict]) -> list[str]:
    """eval.sequential.perplexity's lines: the statistics' corpus less the rows the stats stage sampled and
    less any line sharing an 8-word run with a passage of the split's cases (robustedit.sequential.probe)."""
    st, pp = cfg["stats"], cfg["eval"]["sequential"]["perplexity"]
    texts = stats_texts(cfg)
    used = set(select_documents(len(texts), st["n_samples"], st["sample_seed"]))
    passages = [p for c in cases for p in [c["long_context"]["eval"], *c["long_context"]["held"]]]
    return held_out_lines(texts, used, passages, pp["n_lines"], pp["min_words"],
                          derive_seed(cfg["seed"], "perplexity lines", cfg["job"]["split"]))

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


def timed_sequence(lm, editor, ordered: list[dict], counts: list[int], unedited: list[dict], suite: dict,
                   lines: list[str]) -> tuple[dict[int, tuple[list[dict], list]], dict]:
    """run_sequence with the suite (the unedited records as every N's "pre") and the probe's line losses as
    its score, {N: (records, losses)}, and the seconds spent editing and scoring."""
    spent = {"score": 0.0}

    def score(model, done: list[dict]) -> tuple[list[dict], list]:
        start = time.time()
        per_case = evaluate_cases(model, lm.tokenizer, lm.arch, done, None, pre_from=unedited[:len(done)], **suite)
        losses = line_losses(model, lm.tokenizer, lm.arch, lines, suite["batch_size"], suite["device"],
                             suite["max_length"])
        spent["score"] += time.time() - start
        return per_case, losses

    start = time.time()
    per_n = run_sequence(lm.model, lm.arch, editor, ordered, counts, score)
    return per_n, {"edit": time.time() - start - spent["score"], "score": spent["score"]}


def sequential_split(cfg: dict, out_dir: Path, stamp_files: tuple = ()) -> None:
    """The stage's outputs. The unedited reference and each finished method are resume pieces
    (<split>.sequential.partial/, checkpoints.CasePieces stamped with the code version and `stamp_files`):
    a killed run starts again at the first method it had not finished."""
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
    partial = out_dir / file_name("sequential_eval", "partial", split=split)
    pieces = CasePieces(partial, [UNEDITED, *editors], "sequential",
                        stamp=checkpoint_stamp("sequential_eval", out_dir, stamp_files))
    done = pieces.resume(bool(cfg["job"].get("fresh")), mmap=False)
    if done:
        print(f"[sequential] resuming after {[UNEDITED, *editors][:len(done)]}", flush=True)
    if not done:
        start = time.time()
        # every N's reference: the cases the largest checkpoint edits, scored on the unedited model
        unedited = evaluate_cases(lm.model, lm.tokenizer, lm.arch, ordered[:counts[-1]], None, **suite)
        lines = probe_lines(cfg, cases)
        losses = line_losses(lm.model, lm.tokenizer, lm.arch, lines, hw["batch_size"], device, ev["max_length"])
        done.append({"unedited": unedited, "lines": lines, "losses": losses, "seconds": time.time() - start})
        pieces.write(0, [UNEDITED], done[-1:])
    unedited, lines = done[0]["unedited"], done[0]["lines"]
    for k, (method, editor) in enumerate(editors.items(), start=1):
        if k < len(done):
            continue
        per_n, seconds = timed_sequence(lm, editor, ordered, counts, unedited, suite, lines)
        done.append({"summary": {str(n): summaries(per_case) for n, (per_case, _) in per_n.items()},
                     "losses": {str(n): losses for n, (_, losses) in per_n.items()}, "seconds": seconds,
                     "records": [{"method": method, "n_edits": n, **case} for n, (per_case, _) in per_n.items()
                                 for case in per_case]})
        pieces.write(k, [method], done[-1:])
        print(f"[sequential] {method}: " + ", ".join(
            f"N={n} success {done[-1]['summary'][str(n)]['post/exact_match/micro']['columns']['success']:.1f}"
            for n in per_n) + f" ({seconds['edit']:.0f} s editing, {seconds['score']:.0f} s scoring)", flush=True)
    methods = dict(zip(editors, done[1:]))
    write_jsonl(out_dir / file_name("sequential_eval", "results", split=split),
                [r for piece in methods.values() for r in piece["records"]])
    write_json(out_dir / file_name("sequential_eval", "summary", split=split),
               {"model": cfg["model"]["name"], "split": split, "order": [c["case_id"] for c in ordered],
                "n_edits": counts, "layers": {m: method_layers(cfg, m) for m in seq["methods"]},
                "seconds": {UNEDITED: done[0]["seconds"], **{m: p["seconds"] for m, p in methods.items()}},
                "summaries": {m: p["summary"] for m, p in methods.items()},
                "perplexity": {"lines": lines, UNEDITED: done[0]["losses"],
                               **{m: p["losses"] for m, p in methods.items()}}})
    pieces.remove()  # last: the outputs are complete
