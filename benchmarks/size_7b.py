"""Disk, memory and write volume per stage for the 7B models, computed from their shapes (nothing is run).

    .venv/bin/python benchmarks/size_7b.py [--cases 400] [--stats-rows 100000] [--stats-hours 1,8]

Prints the Markdown tables of README "Disk and memory for 7B models". Sizes come from the tensor
shapes: bf16 weights (untied embeddings, grouped KV heads), the fp64 second moment C and its fp64
Cholesky factor (D x D each, D = intermediate size), ROME's per-case edit (u [D], v [hidden], fp32),
and REP's per-case adaptor as `robustedit.rep.init_params` builds it with conf/rep's adaptor settings
(rank-32 projection + a gate of width int(0.1 D)). eval_rep's chunk is ADAPTOR_CHUNK_BYTES of
scripts/eval_rep.py; the per-batch gather of batched_adaptor_forward is batch_size (conf/hardware/
gpu.yaml) adaptors. Activations, the CUDA context and allocator slack are not counted.
GB = 10⁹ bytes.
"""
from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from robustedit.rep import AdaptorConfig, init_params

REPO = Path(__file__).resolve().parents[1]
FP64, FP32, BF16 = 8, 4, 2  # bytes per element


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int  # D: the down_proj input (ROME's key, REP's adaptor width)
    layers: int
    vocab: int
    heads: int = 32
    kv_heads: int = 32

    def n_params(self) -> int:
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim  # q, o; k, v
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        per_layer = attn + mlp + 2 * self.hidden  # two RMSNorm weights
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden  # embed, lm_head, norm


MODELS = (Shape("LLaMA-2-7B", 4096, 11008, 32, 32000), Shape("Mistral-7B", 4096, 14336, 32, 32000, kv_heads=8))


def adaptor_config() -> AdaptorConfig:
    """conf/rep/default.yaml composed over its `release` defaults (as Hydra does), adaptor group only."""
    release, default = (OmegaConf.load(REPO / "conf" / "rep" / f"{n}.yaml") for n in ("release", "default"))
    merged = OmegaConf.to_container(OmegaConf.merge(release, {k: v for k, v in default.items() if k != "defaults"}))
    return AdaptorConfig.from_dict({**merged["adaptor"], "threshold": merged["gate_threshold"]})


def adaptor_bytes(key_dim: int, cfg: AdaptorConfig) -> int:
    params = init_params(key_dim, cfg, torch.Generator().manual_seed(0))
    return sum(t.numel() * t.element_size() for t in params.values())


def chunk_budget() -> int:
    """ADAPTOR_CHUNK_BYTES as scripts/eval_rep.py defines it (read from its source, not copied)."""
    tree = ast.parse((REPO / "scripts" / "eval_rep.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ADAPTOR_CHUNK_BYTES" for t in node.targets):
            return int(eval(compile(ast.Expression(node.value), "eval_rep.py", "eval"), {"__builtins__": {}}))
    raise SystemExit("scripts/eval_rep.py defines no ADAPTOR_CHUNK_BYTES")


def gb(n_bytes: float) -> str:
    value = n_bytes / 1e9
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def sizes(m: Shape, args, acfg: AdaptorConfig) -> dict:
    """Every figure of the tables for one model, in bytes (counts where named so)."""
    d, n = m.intermediate, args.cases
    weights, square = m.n_params() * BF16, FP64 * d * d
    edit, adaptor = FP32 * (d + m.hidden), adaptor_bytes(d, acfg)
    chunk = max(1, args.chunk_bytes // adaptor)
    rome_saves = [min(k, n) for k in range(args.batch_cases, n + args.batch_cases, args.batch_cases)]
    rep_saves = [min(k, n) for k in range(8, n + 8, 8)]  # the old rep_train saved every 8 cases
    old_ckpts = -(-args.stats_rows // args.checkpoint_every)  # the old code: one after every chunk
    return {"params": m.n_params(), "weights": weights, "square": square, "edit": edit, "adaptor": adaptor,
            "edits": n * edit, "adaptors": n * adaptor, "chunk_cases": min(chunk, n), "chunk": min(chunk, n) * adaptor,
            "gather": args.batch_size * adaptor, "n_chunks": -(-n // chunk),
            "rome_old_writes": (sum(rome_saves) + n) * edit, "rep_old_writes": (sum(rep_saves) + n) * adaptor,
            "stats_old_ckpts": old_ckpts, "stats_chunks": old_ckpts}


def basics_table(all_sizes: dict, args) -> list[str]:
    names = list(all_sizes)
    rows = [("parameters", lambda s: f"{s['params'] / 1e9:.2f} B"),
            ("weights, bf16", lambda s: gb(s["weights"]) + " GB"),
            ("second moment C, fp64 D x D (D = intermediate)", lambda s: gb(s["square"]) + " GB"),
            ("its Cholesky factor, fp64 D x D", lambda s: gb(s["square"]) + " GB"),
            ("ROME edit per case (u [D] + v [hidden], fp32)", lambda s: f"{s['edit'] / 1e3:.1f} kB"),
            (f"ROME edits, {args.cases} cases", lambda s: f"{s['edits'] / 1e6:.1f} MB"),
            ("REP adaptor per case (rank-32 A, B + gate int(0.1 D) x D, fp32)",
             lambda s: f"{s['adaptor'] / 1e6:.1f} MB"),
            (f"REP adaptors, {args.cases} cases", lambda s: gb(s["adaptors"]) + " GB"),
            (f"eval_rep chunk ({args.chunk_bytes / 2 ** 30:g} GiB budget)",
             lambda s: f"{s['chunk_cases']} cases = {gb(s['chunk'])} GB, {s['n_chunks']} chunks"),
            (f"eval_rep per-batch adaptor gather ({args.batch_size} rows)", lambda s: gb(s["gather"]) + " GB")]
    out = ["| quantity | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += [f"| {label} | " + " | ".join(fn(all_sizes[k]) for k in names) + " |" for label, fn in rows]
    return out


def stage_rows(s: dict) -> list[tuple]:
    """(stage, disk after, peak disk, bytes written, host peak, device peak) for one model, in bytes;
    None = not modelled; a string is printed as it is. Host peak: the larger of (weights + what is in
    host memory while they load: the model is loaded on the CPU, then moved) and what the stage holds
    on the host afterwards."""
    w, sq, ad, edits, adaptors = s["weights"], s["square"], s["adaptor"], s["edits"], s["adaptors"]
    return [("prepare_model", w, w, w, None, None),
            ("stats", sq, 2 * sq, "below", max(w, 2 * sq), w + 2 * sq),  # sum + final moment on the device
            ("rome", edits, 2 * edits, 2 * edits, w + sq, w + sq),  # C on the host, its factor on the device
            ("eval_rome", None, None, None, w + edits, w + edits),
            ("rep", adaptors, 2 * adaptors, 2 * adaptors, w + edits, w + 4 * ad),  # + grad, Adam moments
            ("rep, before", adaptors, 2 * adaptors, s["rep_old_writes"], max(w + edits, adaptors), w + 4 * ad),
            ("eval_rep", None, None, None, max(w, s["chunk"]), w + s["chunk"] + s["gather"] + edits),
            ("eval_rep, before", None, None, None, max(w + adaptors, 2 * adaptors),
             w + adaptors + s["gather"] + edits)]


def stage_table(all_sizes: dict, args) -> list[str]:
    names = list(all_sizes)
    cols = ("disk after", "peak disk", "written", "host memory peak", "device memory peak")
    out = ["| stage (GB: " + " / ".join(names) + ") | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    per_model = [stage_rows(all_sizes[k]) for k in names]
    for i, (stage, *_) in enumerate(per_model[0]):
        cells = []
        for j in range(len(cols)):
            vals = [rows[i][j + 1] for rows in per_model]
            if vals[0] is None or isinstance(vals[0], str):
                cells.append(vals[0] or "–")
            else:
                cells.append(" / ".join(gb(v) for v in vals))
        out.append(f"| {stage} | " + " | ".join(cells) + " |")
    return out


def writes_table(all_sizes: dict, args) -> list[str]:
    names = list(all_sizes)
    hours = [float(h) for h in args.stats_hours.split(",")]
    per_hour = 60 / args.checkpoint_minutes if args.checkpoint_minutes else float("inf")
    out = ["| resume writes | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label, fn):
        out.append(f"| {label} | " + " | ".join(fn(all_sizes[k]) for k in names) + " |")

    row(f"rep before (all states rewritten every 8 cases), {args.cases} cases",
        lambda s: gb(s["rep_old_writes"]) + " GB")
    row(f"rep now (each case once + the final file), {args.cases} cases", lambda s: gb(2 * s["adaptors"]) + " GB")
    row(f"rome before (all edits rewritten every {args.batch_cases} cases)",
        lambda s: f"{s['rome_old_writes'] / 1e6:.0f} MB")
    row("rome now (each case once + the final file)", lambda s: f"{2 * s['edits'] / 1e6:.0f} MB")
    row(f"stats before: a checkpoint every {args.checkpoint_every} rows, {args.stats_rows:,} rows",
        lambda s: f"{s['stats_old_ckpts']} x {gb(s['square'])} = {gb(s['stats_old_ckpts'] * s['square'])} GB")
    for h in hours:
        def now(s, h=h):
            k = int(min(s["stats_chunks"] - 1, h * per_hour))
            return f"<= {k} x {gb(s['square'])} = {gb(k * s['square'])} GB"
        row(f"stats now, {h:g} h of run time (<= 1 checkpoint per {args.checkpoint_minutes:g} min)", now)
    return out


def main() -> None:
    stats = OmegaConf.load(REPO / "conf" / "stats" / "wikitext.yaml")
    hardware = OmegaConf.load(REPO / "conf" / "hardware" / "gpu.yaml")
    rome = OmegaConf.load(REPO / "conf" / "rome" / "default.yaml")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=400, help="cases of the split (REP's test split: 400)")
    ap.add_argument("--stats-rows", type=int, default=100_000, help="stats.n_samples (the paper: 100,000)")
    ap.add_argument("--stats-hours", default="1,8", help="run times of the stats stage to bound its writes for")
    ap.add_argument("--batch-size", type=int, default=hardware.batch_size, help="rows per forward (hardware=gpu)")
    ap.add_argument("--batch-cases", type=int, default=rome.batch_cases, help="rome.batch_cases")
    ap.add_argument("--checkpoint-every", type=int, default=stats.checkpoint_every, help="stats.checkpoint_every")
    ap.add_argument("--checkpoint-minutes", type=float, default=stats.checkpoint_minutes,
                    help="stats.checkpoint_minutes")
    ap.add_argument("--chunk-bytes", type=int, default=None, help="eval_rep chunk (default: eval_rep.py's)")
    args = ap.parse_args()
    args.chunk_bytes = args.chunk_bytes or chunk_budget()
    acfg = adaptor_config()
    all_sizes = {m.name: sizes(m, args, acfg) for m in MODELS}
    for table in (basics_table, stage_table, writes_table):  # quantities, stages, resume writes
        print("\n".join(table(all_sizes, args)) + "\n")


if __name__ == "__main__":
    main()
