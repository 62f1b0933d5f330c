"""Stage `stats`: ROME's second moment C = E[k kᵀ] at the edit layer, resumable.

    python scripts/stats.py model=gemma3-270m stats.n_samples=2000
Writes <stage dir>/mom2.pt ({"moment": float64 [D, D], "count", "meta"}) and stats.json (throughput).
Partial sums go to mom2.partial.pt after a chunk of `stats.checkpoint_every` rows, at most once per
`stats.checkpoint_minutes` of wall clock (each checkpoint is the full float64 D x D sum: 0.97 GB for
LLaMA-2-7B, 1.64 GB for Mistral-7B); a rerun resumes there if the checkpoint has this run's stage hash
and code version (checkpoints.checkpoint_stamp) and covers the same rows (rome.stats: meta and rows_sha256), and
otherwise discards it with a message; a forced rerun (job.fresh=true) starts afresh.
"""
from __future__ import annotations

from pathlib import Path

import torch

from robustedit.checkpoints import checkpoint_stamp, discard, load_checkpoint
from robustedit.io import remove_stray_temps, save_torch, write_json
from robustedit.models.load import load_model, resolve_device, resolve_dtype
from robustedit.rome.stats import ResumeMismatch, compute_second_moment
from robustedit.pipeline.stage import model_dir, stage_app
from robustedit.pipeline.wikitext import stats_texts
from robustedit.stages import file_name

STAMP_FILES = (__file__,)  # the script a checkpoint's code version covers (besides the library, pipeline glue included)


@stage_app("stats")
def main(cfg: dict, out_dir: Path) -> None:
    st, hw = cfg["stats"], cfg["hardware"]
    remove_stray_temps(out_dir)  # temporary files left by a killed run (one stats job per directory)
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    partial, stamp = out_dir / file_name("stats", "partial"), checkpoint_stamp("stats", out_dir, STAMP_FILES)
    state = load_checkpoint(partial, stamp, "stats", fresh=bool(cfg["job"].get("fresh")))
    texts = stats_texts(cfg)

    def run(state: dict | None):
        return compute_second_moment(
            lm.model, lm.tokenizer, lm.arch, cfg["model"]["layer"], texts,
            n_samples=st["n_samples"], seed=st["sample_seed"], max_length=st["max_length"],
            batch_tokens=st["batch_tokens"], include_bos=st["include_bos"], dtype=resolve_dtype(hw["linalg_dtype"]),
            device=resolve_device(hw["device"]), state=state,
            on_checkpoint=lambda s: save_torch({**s, "stamp": stamp}, partial),
            checkpoint_every=st["checkpoint_every"], checkpoint_seconds=60 * st["checkpoint_minutes"], progress=True)

    result = resume_or_restart(run, state, partial)
    moment = result.moment
    if not torch.isfinite(moment).all():
        raise FloatingPointError(f"[stats] second moment has non-finite entries ({out_dir}); not saved")
    save_torch({"moment": moment.cpu(), "count": result.accumulator.count, "meta": result.accumulator.meta},
               out_dir / file_name("stats", "moment"))
    write_json(out_dir / file_name("stats", "stats"),
               {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.stats.items()})
    print(f"[stats] {result.stats['tokens']} tokens at {result.stats['tokens_per_s']:.0f} tokens/s", flush=True)
    partial.unlink(missing_ok=True)


def resume_or_restart(run, state: dict | None, partial: Path):
    """run(state), or run(None) after discarding a checkpoint whose rows or meta do not match (checked
    before any work)."""
    if state is None:
        return run(None)
    try:
        result = run(state)
    except ResumeMismatch as e:
        discard(partial, "stats", str(e))
        return run(None)
    print(f"[stats] resumed from {partial} ({state['n_docs_done']} rows done)", flush=True)
    return result


if __name__ == "__main__":
    main()
