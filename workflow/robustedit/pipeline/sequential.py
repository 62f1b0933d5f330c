"""The sequential_eval stage (scripts/sequential_eval.py): eval.sequential's methods as the split's cases'
edits accumulate (robustedit.sequential), the suite scored teacher-forced after every checkpoint N.

Sequences (robustedit.pipeline.sequential_config.sequential_runs): ROME's scores `rome` (its edits in the
weights) and `rep` (the same weights with every edited case's REP adaptor composed on the down_proj input,
robustedit.rep.compose); MEMIT and AlphaEdit run their own; EREN's notebook grows instead
(robustedit.sequential.eren). Its results hold one record per (method, N, case); its summary every metric x
aggregation per method and N, the perplexity probe's per-line losses (unedited, and per weight-editing method
and N), the seeded edit order and each sequence's seconds."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, ContextManager

import torch

from robustedit.checkpoints import CasePieces, checkpoint_stamp
from robustedit.errors import ConfigError, RecordError
from robustedit.evaluate import evaluate_cases
from robustedit.io import read_json, read_jsonl, write_json, write_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.evaluate import summaries
from robustedit.pipeline.sequential_config import (NO_WEIGHTS, ON_ROME, at_layer, method_layers, moment_layers,
                                                   sequential_runs)
from robustedit.pipeline.stage import model_dir, stage_file
from robustedit.pipeline.wikitext import stats_texts
from robustedit.rep.compose import composed_adaptors
from robustedit.rome.hparams import ROMEHyperParams
from robustedit.rome.stats import select_documents
from robustedit.seeding import derive_seed
from robustedit.sequential import SEQUENTIAL_EDITORS, edit_counts, edit_order, run_sequence
from robustedit.sequential.probe import held_out_lines, line_losses
from robustedit.stages import file_name

UNEDITED = "unedited"  # the first resume piece and the summary's key of the unedited reference
View = Callable[[list], ContextManager]  # the scored cases -> the context the model is scored in


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


def in_the_weights(done: list[dict]) -> ContextManager:
    """rome's, memit's and alphaedit's scoring context: the edits in the weights, nothing else."""
    return contextlib.nullcontext()


def adaptor_view(cfg: dict, lm, device) -> View:
    """ROME+REP's scoring context: the rep stage's adaptors of the scored cases composed on ROME's layer, at
    rep.gate_threshold (as eval_rep). Each adaptor was trained on its case's keys and u, which sequential ROME
    leaves as they are (the keys sit below the edited weight), so they are what sequential training would give."""
    path = stage_file(cfg, "rep", "adaptors")
    saved = torch.load(path, mmap=True, weights_only=True)
    if saved["layer"] != cfg["model"]["layer"]:
        raise ConfigError(f"{path}: adaptors on layer {saved['layer']}, ROME edits model.layer={cfg['model']['layer']}")
    states = dict(zip(saved["case_ids"], saved["states"]))
    down_proj = lm.arch.module(lm.model, "down_proj", saved["layer"])

    def view(done: list[dict]):
        missing = [c["case_id"] for c in done if c["case_id"] not in states]
        if missing:
            raise RecordError(f"{path} has no adaptor for case_id(s) {missing}; rerun rep on this split")
        return composed_adaptors(down_proj, [states[c["case_id"]] for c in done], device, cfg["rep"]["gate_threshold"])
    return view


def timed_sequence(lm, editor, ordered: list[dict], counts: list[int], unedited: list[dict], suite: dict,
                   lines: list[str], views: dict[str, View]) -> tuple[dict[int, dict], dict]:
    """run_sequence scoring each of `views` after every checkpoint: the suite (the unedited records as every N's
    "pre") and the probe's line losses, {N: {method: (records, losses)}}, and the seconds editing and scoring."""
    spent = {method: 0.0 for method in views}

    def score(model, done: list[dict]) -> dict:
        out = {}
        for method, view in views.items():
            start = time.time()
            with view(done):
                per_case = evaluate_cases(model, lm.tokenizer, lm.arch, done, None, pre_from=unedited[:len(done)],
                                          **suite)
                losses = line_losses(model, lm.tokenizer, lm.arch, lines, suite["batch_size"], suite["device"],
                                     suite["max_length"])
            spent[method] += time.time() - start
            out[method] = (per_case, losses)
        return out

    start = time.time()
    per_n = run_sequence(lm.model, lm.arch, editor, ordered, counts, score)
    return per_n, {"edit": time.time() - start - sum(spent.values()), "score": spent}


def eren_sequence(cfg: dict, ordered: list[dict], counts: list[int]) -> tuple[dict[int, dict], dict]:
    """EREN's checkpoints in the format of timed_sequence (no perplexity: EREN edits no weight)."""
    from robustedit.pipeline.eren import load_encoder_from, load_reader_from
    from robustedit.sequential.eren import ErenSettings, eren_checkpoints

    eren = cfg["eren"]
    settings = ErenSettings(k=eren["k"], index=eren["index"], faiss_device=eren["faiss_device"],
                            groups=tuple(eren["suite"]["groups"]), long_id_passages=cfg["eval"]["long_id_passages"],
                            n_cases=cfg["eval"]["sequential"]["eren"]["n_cases"],
                            seed=derive_seed(cfg["seed"], "sequential eren", cfg["job"]["split"]))
    start = time.time()
    per_n = eren_checkpoints(ordered, counts, load_encoder_from(cfg), load_reader_from(cfg), settings)
    seconds = {"score": {NO_WEIGHTS: time.time() - start}}
    return {n: {NO_WEIGHTS: (per_case, None)} for n, per_case in per_n.items()}, seconds


def method_piece(method: str, per_n: dict[int, dict]) -> dict:
    """One scored method's share of a sequence's resume piece: summaries, losses and records per N."""
    if method == NO_WEIGHTS:
        from robustedit.eren.robustness import suite_summaries

        summary = {str(n): suite_summaries([it for c in d[method][0] for it in c["items"]], teacher_forced=True)
                   for n, d in per_n.items()}
    else:
        summary = {str(n): summaries(d[method][0]) for n, d in per_n.items()}
    return {"summary": summary, "losses": {str(n): d[method][1] for n, d in per_n.items()},
            "records": [{"method": method, "n_edits": n, **case} for n, d in per_n.items() for case in d[method][0]]}


def sequential_split(cfg: dict, out_dir: Path, stamp_files: tuple = ()) -> None:
    """The stage's outputs. The unedited reference and each finished sequence are resume pieces
    (<split>.sequential.partial/, checkpoints.CasePieces stamped with the code version and `stamp_files`):
    a killed run starts again at the first sequence it had not finished."""
    split, hw, seq = cfg["job"]["split"], cfg["hardware"], cfg["eval"]["sequential"]
    runs = sequential_runs(seq["methods"])
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
    # every editor and view first, so that a method the model does not support fails before any computation
    editors = {run: make_editor(cfg, run, lm, templates, moments, device) for run in runs if run != NO_WEIGHTS}
    views = {ON_ROME: adaptor_view(cfg, lm, device)} if ON_ROME in seq["methods"] else {}
    partial = out_dir / file_name("sequential_eval", "partial", split=split)
    pieces = CasePieces(partial, [UNEDITED, *runs], "sequential",
                        stamp=checkpoint_stamp("sequential_eval", out_dir, stamp_files))
    done = pieces.resume(bool(cfg["job"].get("fresh")), mmap=False)
    if done:
        print(f"[sequential] resuming after {[UNEDITED, *runs][:len(done)]}", flush=True)
    if not done:
        start = time.time()
        # every N's reference: the cases the largest checkpoint edits, scored on the unedited model
        unedited = evaluate_cases(lm.model, lm.tokenizer, lm.arch, ordered[:counts[-1]], None, **suite)
        lines = probe_lines(cfg, cases)
        losses = line_losses(lm.model, lm.tokenizer, lm.arch, lines, hw["batch_size"], device, ev["max_length"])
        done.append({"unedited": unedited, "lines": lines, "losses": losses, "seconds": time.time() - start})
        pieces.write(0, [UNEDITED], done[-1:])
    unedited, lines = done[0]["unedited"], done[0]["lines"]
    for k, (run, methods) in enumerate(runs.items(), start=1):
        if k < len(done):
            continue
        if run == NO_WEIGHTS:
            per_n, seconds = eren_sequence(cfg, ordered, counts)
        else:
            per_n, seconds = timed_sequence(lm, editors[run], ordered, counts, unedited, suite, lines,
                                            {m: views.get(m, in_the_weights) for m in methods})
        done.append({"methods": {m: method_piece(m, per_n) for m in methods}, "seconds": seconds})
        pieces.write(k, [run], done[-1:])
        for m in methods:
            post = {n: s["post/exact_match/micro"]["columns"] for n, s in done[-1]["methods"][m]["summary"].items()}
            print(f"[sequential] {m}: " + ", ".join(f"N={n} success {c['success']:.1f}" for n, c in post.items())
                  + f" ({seconds.get('edit', 0):.0f} s editing the sequence, {seconds['score'][m]:.0f} s scoring)",
                  flush=True)
    methods = {m: piece for run in done[1:] for m, piece in run["methods"].items()}
    methods = {m: methods[m] for m in seq["methods"]}  # config order
    write_jsonl(out_dir / file_name("sequential_eval", "results", split=split),
                [r for piece in methods.values() for r in piece["records"]])
    write_json(out_dir / file_name("sequential_eval", "summary", split=split),
               {"model": cfg["model"]["name"], "split": split, "order": [c["case_id"] for c in ordered],
                "n_edits": counts, "layers": {m: method_layers(cfg, m) for m in seq["methods"]},
                "seconds": {UNEDITED: done[0]["seconds"], **{run: p["seconds"] for run, p in zip(runs, done[1:])}},
                "summaries": {m: p["summary"] for m, p in methods.items()},
                "perplexity": {"lines": lines, UNEDITED: done[0]["losses"],
                               **{m: p["losses"] for m, p in methods.items() if m != NO_WEIGHTS}}})
    pieces.remove()  # last: the outputs are complete
