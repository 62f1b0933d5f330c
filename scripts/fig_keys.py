"""Stage `fig_keys` (REP paper Figure 3): the edit key against its perturbed variants, and a PCA.

    python scripts/fig_keys.py job.split=valid
Writes <stage dir>/<split>.similarity.csv (one row per case and variant, plus the random-pair
baseline: whitened cosine kᵀC⁻¹k′/√(kᵀC⁻¹k·k′ᵀC⁻¹k′) and raw cosine) and <split>.pca.csv (case
`analysis.pca_case`'s whitened keys on two principal components).
"""
from __future__ import annotations

from pathlib import Path

from robustedit.analysis.keys import pca_rows, random_pair_rows, read_case_keys, variant_rows
from robustedit.analysis.tables import write_csv
from robustedit.analysis.whiten import load_solver
from robustedit.models.load import load_model, resolve_device
from robustedit.seeding import py_rng
from robustedit.pipeline.analysis import analysed_cases
from robustedit.pipeline.stage import model_dir, stage_app, stage_file
from robustedit.stages import file_name

SIM_COLUMNS = ["model", "split", "case_id", "subject", "kind", "group", "variant", "other_case_id", "similarity",
               "raw_cosine"]
PCA_COLUMNS = ["model", "split", "case_id", "subject", "kind", "group", "variant", "pc1", "pc2",
               "pc1_variance_ratio", "pc2_variance_ratio"]


@stage_app("fig_keys")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw, an = cfg["job"]["split"], cfg["hardware"], cfg["analysis"]
    cases = analysed_cases(cfg)
    if not cases:
        raise ValueError(f"[fig_keys] the {split} split has no cases to analyse")
    if an["pca_case"] >= len(cases):
        raise ValueError(f"[fig_keys] analysis.pca_case={an['pca_case']} but only {len(cases)} cases are analysed")
    solver = load_solver(stage_file(cfg, "stats", "moment"))
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    down_proj = lm.arch.module(lm.model, "down_proj", cfg["model"]["layer"])
    case_keys = read_case_keys(lm.model, lm.tokenizer, down_proj, cases, batch_rows=hw["batch_size"],
                               device=resolve_device(hw["device"]))
    rng = py_rng(cfg["seed"], "analysis", "random_pairs", split)
    rows = variant_rows(solver, case_keys) + random_pair_rows(solver, case_keys, an["n_random_pairs"], rng)
    tag = {"model": cfg["model"]["name"], "split": split}
    write_csv(out_dir / file_name("fig_keys", "similarity", split=split), ({**tag, **r} for r in rows), SIM_COLUMNS)
    pca = pca_rows(solver, case_keys[an["pca_case"]])
    write_csv(out_dir / file_name("fig_keys", "pca", split=split), ({**tag, **r} for r in pca), PCA_COLUMNS)
    for kind in ("rephrase", "shuffle", "long", "random"):
        sims = sorted(r["similarity"] for r in rows if r["kind"] == kind)
        if sims:
            print(f"[fig_keys] {kind}: n={len(sims)} median similarity {sims[len(sims) // 2]:.3f}", flush=True)


if __name__ == "__main__":
    main()
