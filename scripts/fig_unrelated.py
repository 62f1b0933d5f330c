"""Stage `fig_unrelated` (REP paper Figure 4): WikiText prefixes whose keys resemble a subject's key.

    python scripts/fig_unrelated.py job.split=valid
Scans analysis.scan.tokens tokens of the vendored WikiText (windows of analysis.scan.window_words
words from a seeded start) and writes <stage dir>/<split>.top_prefixes.csv (per subject, the top_k
prefixes not containing the subject, by whitened cosine with the subject's original key) and
<split>.scan_hist.csv (histogram of every subject x scanned-key similarity).
"""
from __future__ import annotations

from pathlib import Path

import torch

from robustedit.analysis.keys import read_case_keys
from robustedit.analysis.tables import write_csv
from robustedit.analysis.unrelated import histogram_rows, scan_similar_keys, scan_windows, top_prefix_rows
from robustedit.analysis.whiten import load_solver
from robustedit.data.perturb import wikitext_words
from robustedit.io import write_json
from robustedit.manifest import DataStore
from robustedit.models.load import load_model, resolve_device
from robustedit.batching import pad_id_of
from robustedit.seeding import py_rng
from robustedit.pipeline.stage import model_dir, stage_app, stage_file
from robustedit.pipeline.analysis import analysed_cases
from robustedit.stages import file_name

TOP_COLUMNS = ["model", "split", "case_id", "subject", "rank", "similarity", "window", "position", "prefix_tail"]
HIST_COLUMNS = ["model", "split", "bin_lo", "bin_hi", "count"]


@stage_app("fig_unrelated")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw, scan = cfg["job"]["split"], cfg["hardware"], cfg["analysis"]["scan"]
    cases = analysed_cases(cfg)
    if not cases:
        raise ValueError(f"[fig_unrelated] the {split} split has no cases to analyse")
    store = DataStore(cfg["paths"]["data"])
    words = wikitext_words([store.path(f).read_text() for f in scan["local_files"]])
    start = py_rng(cfg["seed"], "analysis", "scan_start").randrange(len(words))
    solver = load_solver(stage_file(cfg, "stats", "moment"))
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device = resolve_device(hw["device"])
    down_proj = lm.arch.module(lm.model, "down_proj", cfg["model"]["layer"])
    windows = scan_windows(lm.tokenizer, words, scan["tokens"], scan["window_words"], start)
    # only the original keys are needed: one pass over the bare prompts
    bare = [{**c, "subject_rephrases": {}, "shuffled_subjects": {}, "long_context": {}} for c in cases]
    originals = torch.stack([ck.original for ck in read_case_keys(lm.model, lm.tokenizer, down_proj, bare,
                                                                   batch_rows=hw["batch_size"], device=device)])
    subjects, case_ids = [c["subject"] for c in cases], [c["case_id"] for c in cases]
    result = scan_similar_keys(lm.model, down_proj, solver, originals, subjects, windows, top_k=scan["top_k"],
                               pad_id=pad_id_of(lm.tokenizer), batch_rows=hw["batch_size"], device=device)
    tag = {"model": cfg["model"]["name"], "split": split}
    top = top_prefix_rows(result, windows, case_ids, subjects, lm.tokenizer, scan["tail_tokens"])
    out = {key: out_dir / file_name("fig_unrelated", key, split=split) for key in ("top", "hist", "scan")}
    write_csv(out["top"], ({**tag, **r} for r in top), TOP_COLUMNS)
    write_csv(out["hist"], ({**tag, **r} for r in histogram_rows(result)), HIST_COLUMNS)
    write_json(out["scan"], {"n_windows": len(windows), "n_keys": result.n_keys, "start_word": start,
                             "n_subjects": len(subjects)})
    print(f"[fig_unrelated] scanned {result.n_keys} keys in {len(windows)} windows for {len(subjects)} subjects",
          flush=True)


if __name__ == "__main__":
    main()
