"""Stage `rep_diagnostics`: why REP helps where it does -- each evaluated key's transfer ratio.

    python scripts/rep_diagnostics.py job.split=valid
Per case and evaluated item with a subject span (robustedit.analysis.transfer), the down_proj key a at
the subject's last token, r = uᵀa / uᵀk* before and after the case's adaptor (hard gate at
rep.gate_threshold, as eval_rep applies it; deterministic), the soft gate and the cosines to k*. Writes
<stage dir>/<split>.transfer.csv (per item, with eval_rome's and eval_rep's exact_match@1 on it),
<split>.transfer_summary.csv (per group × ROME's outcome on the item) and <split>.transfer.png.
The oracle ceilings of a key-side fix (robustedit.analysis.oracle: the key replaced by k*, or shifted along u
until r = 1, with ROME's edit in W) per item in <split>.oracle.csv, per group with case-level bootstrap
intervals beside eval_rome's and eval_rep's exact match in <split>.oracle_summary.csv.
"""
from __future__ import annotations

from pathlib import Path

import torch

from robustedit.analysis.oracle import METHODS, ORACLES, PAIRS, oracle_records, pair_name, summarise_oracles
from robustedit.analysis.tables import write_csv
from robustedit.analysis.transfer import join_outcomes, plot_transfer, summarise_transfer, transfer_records
from robustedit.edits import RankOneEdit
from robustedit.evaluate.items import GROUPS
from robustedit.io import read_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.stage import model_dir, stage_app, stage_file
from robustedit.stages import file_name

COLUMNS = ["model", "split", "case_id", "group", "index", "prompt", "r_before", "r_after", "gate", "gate_open",
           "cos_before", "cos_after", "rome_em", "rep_em", "rome_outcome", "rome_case_success"]
ORACLE_COLUMNS = ["model", "split", "case_id", "group", "index", "prompt", *ORACLES,
                  *(f"{o}_logprob" for o in ORACLES), "rome_em", "rep_em"]
ORACLE_STATISTICS = [*METHODS, *(pair_name(*p) for p in PAIRS)]  # each with its _lo and _hi
ORACLE_SUMMARY_COLUMNS = ["model", "split", "group", "n", *(f"{m}{x}" for m in ORACLE_STATISTICS
                                                             for x in ("", "_lo", "_hi"))]
SUMMARY_COLUMNS = ["model", "split", "group", "domain", "rome_outcome", "n", "r_before_q25", "r_before_median",
                   "r_before_q75", "r_after_q25", "r_after_median", "r_after_q75", "gate_open_frac", "rep_success",
                   "rome_success"]


@stage_app("rep_diagnostics")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw = cfg["job"]["split"], cfg["hardware"]
    cases = read_jsonl(stage_file(cfg, "cases", "cases"))
    ids = [c["case_id"] for c in cases]
    edits = torch.load(stage_file(cfg, "rome", "edits"), weights_only=True)
    adaptors = torch.load(stage_file(cfg, "rep", "adaptors"), mmap=True, weights_only=True)
    rome_results = read_jsonl(stage_file(cfg, "eval_rome", "results"))
    rep_results = read_jsonl(stage_file(cfg, "eval_rep", "results"))
    for label, got in (("rome edits", edits["case_ids"]), ("rep adaptors", adaptors["case_ids"]),
                       ("eval_rome results", [r["case_id"] for r in rome_results]),
                       ("eval_rep results", [r["case_id"] for r in rep_results])):
        if got != ids:
            raise ValueError(f"[rep_diagnostics] {split}: the {label} do not match the cases file (rerun that stage)")
    if adaptors["layer"] != edits["layer"]:
        raise ValueError(f"[rep_diagnostics] adaptors on layer {adaptors['layer']}, edits on {edits['layer']}")
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device = resolve_device(hw["device"])
    down_proj = lm.arch.module(lm.model, "down_proj", edits["layer"])
    records, skipped, oracles = [], {}, []
    passages = cfg["eval"]["long_id_passages"]
    for i, case in enumerate(cases):
        recs, skip = transfer_records(lm.model, lm.tokenizer, down_proj, case, edits["u"][i], adaptors["states"][i],
                                      cfg["rep"]["gate_threshold"], device, long_id_passages=passages,
                                      batch_rows=hw["batch_size"])
        records += recs
        skipped = {g: skipped.get(g, 0) + n for g, n in skip.items()}
        edit = RankOneEdit(edits["layer"], edits["u"][i], edits["v"][i])
        oracles += oracle_records(lm.model, lm.tokenizer, down_proj, case, edit, device, long_id_passages=passages)
    rows = join_outcomes(records, rome_results, rep_results)
    tag = {"model": cfg["model"]["name"], "split": split}
    keys = ("transfer", "summary", "figure", "oracle", "oracle_summary")
    out = {key: out_dir / file_name("rep_diagnostics", key, split=split) for key in keys}
    write_csv(out["transfer"], ({**tag, **r} for r in rows), COLUMNS)
    summary = summarise_transfer(rows)
    write_csv(out["summary"], ({**tag, **s} for s in summary), SUMMARY_COLUMNS)
    plot_transfer(rows, out["figure"],
                  title=f"{cfg['model']['name']} {split}: ROME's transfer ratio before / after REP "
                        f"(threshold {cfg['rep']['gate_threshold']})")
    oracle_rows = join_outcomes(oracles, rome_results, rep_results)
    write_csv(out["oracle"], ({**tag, **r} for r in oracle_rows), ORACLE_COLUMNS)
    write_csv(out["oracle_summary"], ({**tag, **s} for s in summarise_oracles(oracle_rows, GROUPS)),
              ORACLE_SUMMARY_COLUMNS)
    differ = sum(r["rome_check"] != r["rome_em"] for r in oracle_rows)
    print(f"[rep_diagnostics] {len(rows)} items of {len(cases)} cases; skipped without the subject: {skipped}; "
          f"oracle rows: the unbatched ROME score differs from eval_rome's on {differ} of {len(oracle_rows)} items",
          flush=True)


if __name__ == "__main__":
    main()
