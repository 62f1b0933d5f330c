"""Stage `fig_values` (REP paper Figure 5): value norms before and after each ROME edit.

    python scripts/fig_values.py job.split=valid
Reads the rome stage's edits (u, right vector) and diagnostics, rebuilds v* = v_init + δ exactly with
one forward pass over the bare prompts (robustedit.analysis.values) and writes
<stage dir>/<split>.values.csv: per case ‖v_init‖, ‖δ‖, ‖v*‖, cos(v_init, δ), ‖v*‖/‖v_init‖ and the
norms the rome stage saved.
"""
from __future__ import annotations

from pathlib import Path

import torch

from robustedit.analysis.tables import write_csv
from robustedit.analysis.values import value_norm_rows
from robustedit.io import read_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.stage import model_dir, stage_app, stage_file
from robustedit.stages import file_name

COLUMNS = ["model", "split", "case_id", "subject", "v_init_norm", "delta_norm", "v_star_norm", "cos_v_init_delta",
           "norm_ratio", "saved_v_init_norm", "saved_delta_norm"]


@stage_app("fig_values")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw = cfg["job"]["split"], cfg["hardware"]
    cases = read_jsonl(stage_file(cfg, "cases", "cases"))
    edits = torch.load(stage_file(cfg, "rome", "edits"), weights_only=True)
    diagnostics = read_jsonl(stage_file(cfg, "rome", "diagnostics"))
    if edits["case_ids"] != [c["case_id"] for c in cases]:
        raise ValueError(f"[fig_values] {split}: ROME edits do not match the cases file (rerun the rome stage)")
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    rows = value_norm_rows(lm.model, lm.tokenizer, lm.arch, edits["layer"], cases, edits["u"], edits["v"],
                           diagnostics, device=resolve_device(hw["device"]), batch_rows=hw["batch_size"])
    tag = {"model": cfg["model"]["name"], "split": split}
    write_csv(out_dir / file_name("fig_values", "values", split=split), ({**tag, **r} for r in rows), COLUMNS)
    worst = max((abs(r["v_init_norm"] - r["saved_v_init_norm"]) / r["saved_v_init_norm"] for r in rows), default=0)
    print(f"[fig_values] {len(rows)} edits; largest relative gap to the saved ‖v_init‖: {worst:.2e}", flush=True)


if __name__ == "__main__":
    main()
