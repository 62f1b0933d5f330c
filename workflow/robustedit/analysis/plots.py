"""The analysis figures from their CSV rows (matplotlib, Agg backend, atomic PNG writes).

Every function takes rows as read from the CSVs (strings are fine) with a "run" column naming the
run (model and stage hash); each run gets its own row of panels.
"""
from __future__ import annotations

import os
from typing import Sequence

from ..io import atomic_path

COLORS = {"rephrase": "tab:blue", "shuffle": "tab:orange", "long": "tab:green", "random": "tab:gray",
          "original": "black", "unrelated": "tab:red"}
SIM_LABEL = "whitened cosine  kᵀC⁻¹k′ / √(kᵀC⁻¹k · k′ᵀC⁻¹k′)"
BINS = 40  # histogram bins per panel (a few hundred values per kind on the small runs)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike) -> None:
    """Lay out `fig`, write it to `path` as a 120-dpi PNG (atomically) and close it."""
    plt = _pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _runs(rows: Sequence[dict]) -> list[str]:
    return sorted({r["run"] for r in rows})


def _grid(n_rows: int, n_cols: int, width: float = 5.0, height: float = 3.6):
    plt = _pyplot()
    fig, axes = plt.subplots(max(1, n_rows), n_cols, figsize=(width * n_cols, height * max(1, n_rows)), squeeze=False)
    return fig, axes


def _values(rows, run, column, **match) -> list[float]:
    return [float(r[column]) for r in rows if r["run"] == run and all(r[k] == v for k, v in match.items())
            and r.get(column) not in (None, "")]


def plot_key_similarity(rows: Sequence[dict], path) -> None:
    """Figure 3 (left): similarity of the original key to each perturbation, against random pairs."""
    runs = _runs(rows)
    fig, axes = _grid(len(runs), 2)
    for (ax_w, ax_r), run in zip(axes, runs):
        for kind in ("rephrase", "shuffle", "long", "random"):
            for ax, col in ((ax_w, "similarity"), (ax_r, "raw_cosine")):
                vals = _values(rows, run, col, kind=kind)
                if vals:
                    ax.hist(vals, bins=BINS, range=(-1, 1), density=True, histtype="step", lw=1.5,
                            color=COLORS[kind], label=f"{kind} (n={len(vals)})")
        ax_w.set(title=f"{run}: whitened by C", xlabel=SIM_LABEL, ylabel="density")
        ax_r.set(title=f"{run}: raw keys", xlabel="cosine  k·k′ / (‖k‖‖k′‖)", ylabel="density")
        for ax in (ax_w, ax_r):
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    save_png(fig, path)


def plot_key_pca(rows: Sequence[dict], path) -> None:
    """Figure 3 (right): one subject's whitened keys on their first two principal components."""
    runs = _runs(rows)
    fig, axes = _grid(1, len(runs), width=5.0, height=4.2)
    for ax, run in zip(axes[0], runs):
        sel = [r for r in rows if r["run"] == run]
        for kind in ("rephrase", "shuffle", "long", "original"):
            pts = [(float(r["pc1"]), float(r["pc2"])) for r in sel if r["kind"] == kind]
            if pts:
                ax.scatter(*zip(*pts), s=90 if kind == "original" else 25, marker="*" if kind == "original" else "o",
                           color=COLORS[kind], label=kind, zorder=3 if kind == "original" else 2)
        subject = sel[0]["subject"] if sel else ""
        ratios = (float(sel[0]["pc1_variance_ratio"]), float(sel[0]["pc2_variance_ratio"])) if sel else (0, 0)
        ax.set(title=f"{run}: {subject!r}", xlabel=f"PC1 ({100 * ratios[0]:.0f}% of variance)",
               ylabel=f"PC2 ({100 * ratios[1]:.0f}%)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_png(fig, path)


def plot_unrelated(top_rows: Sequence[dict], hist_rows: Sequence[dict], key_rows: Sequence[dict], path) -> None:
    """Figure 4: all scanned prefixes, the most similar unrelated prefix per subject, and (when given)
    the subject's own perturbed keys, all as similarity to the subject's original key."""
    runs = _runs(top_rows)
    fig, axes = _grid(1, len(runs), width=6.0, height=4.0)
    for ax, run in zip(axes[0], runs):
        hist = [r for r in hist_rows if r["run"] == run]
        if hist:
            lo, hi = [float(r["bin_lo"]) for r in hist], [float(r["bin_hi"]) for r in hist]
            counts = [float(r["count"]) for r in hist]
            total = sum(c * (b_hi - b_lo) for c, b_lo, b_hi in zip(counts, lo, hi)) or 1.0
            ax.stairs([c / total for c in counts], [*lo, hi[-1]], color=COLORS["random"], fill=True, alpha=0.3,
                      label=f"all scanned prefixes (n={int(sum(counts))})")
        best = _values(top_rows, run, "similarity", rank="1")
        if best:
            ax.hist(best, bins=BINS, range=(-1, 1), density=True, histtype="step", lw=2, color=COLORS["unrelated"],
                    label=f"most similar unrelated prefix (n={len(best)})")
        for kind in ("rephrase", "shuffle", "long"):
            vals = _values(key_rows, run, "similarity", kind=kind)
            if vals:
                ax.hist(vals, bins=BINS, range=(-1, 1), density=True, histtype="step", lw=1.2, color=COLORS[kind],
                        label=f"{kind} of the subject (n={len(vals)})")
        ax.set(title=run, xlabel=SIM_LABEL, ylabel="density")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_png(fig, path)


def plot_value_norms(rows: Sequence[dict], path) -> None:
    """Figure 5: ‖v_init‖ against ‖v*‖ = ‖v_init + δ‖ per edit, and the ratio's distribution."""
    runs = _runs(rows)
    fig, axes = _grid(len(runs), 2, width=4.6, height=4.0)
    for (ax_s, ax_h), run in zip(axes, runs):
        before, after = _values(rows, run, "v_init_norm"), _values(rows, run, "v_star_norm")
        ax_s.scatter(before, after, s=18, color="tab:purple")
        top = max(before + after + [1e-9]) * 1.05
        ax_s.plot([0, top], [0, top], color="gray", lw=1, ls="--", label="‖v*‖ = ‖v_init‖")
        ax_s.set(title=f"{run} (n={len(before)})", xlabel="‖v_init‖ (before the edit)",
                 ylabel="‖v*‖ = ‖v_init + δ‖ (after)", xlim=(0, top), ylim=(0, top))
        ax_s.legend(fontsize=7)
        ratio = _values(rows, run, "norm_ratio")
        ax_h.hist(ratio, bins=BINS, color="tab:purple", alpha=0.7)
        ax_h.set(title="‖v*‖ / ‖v_init‖", xlabel="ratio", ylabel="edits")
        for ax in (ax_s, ax_h):
            ax.grid(alpha=0.3)
    save_png(fig, path)
