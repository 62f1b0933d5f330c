"""Do single-edit REP adaptors compose? Each case's gate read on every other case's edit prompt (SmolLM2, CPU).

Under the sequential protocol (README "Many edits") every edited case's adaptor acts on the same down_proj
input: x' = x + Σ_j [g_j(x) > t] B_j A_j x (robustedit.rep.compose). On case i's bare edit prompt, at the
subject's last token (the key k_i; ROME edits below nothing that changes it), this prints for each threshold t:
- how many foreign gates (j ≠ i) open on k_i, per case;
- the transfer ratio r_i = u_iᵀa / u_iᵀk_i (ROME's edit adds (v* − W k*)·r, README "REP key diagnostics") with
  case i's own adaptor alone and with all adaptors composed: median, and the share of cases with r outside
  [0.5, 1.5];
- crosstalk at the positions of case i's prompt after the first: the number of other edited cases j whose
  share r_j(p) = u_jᵀx_p / u_jᵀk_j exceeds 0.5 at some position p (edit j then adds at least half of
  (v_j − W k_j) there), with the edits alone (x) and with the adaptors composed (x'), and their paired
  difference;
every mean over cases with a 95% case-level bootstrap interval (robustedit.analysis.bootstrap, as the tables),
over the first N cases of the run's keys, for N in --n-edits (cases in file order; the sequential protocol's
seeded order differs, so this is the composition's typical effect, not the run's exact cases).

    .venv/bin/python benchmarks/rep_crosstalk.py [--overrides "job.split=test"] [--thresholds 0.5 0.9]
"""
from __future__ import annotations

import argparse

import torch

from robustedit.analysis.bootstrap import bootstrap_interval, case_sums, paired_difference
from robustedit.io import read_jsonl
from robustedit.models.load import load_model
from robustedit.pipeline.config import compose
from robustedit.pipeline.stage import model_dir, stage_file
from robustedit.readout import read_down_proj
from robustedit.rep.apply import stack_states
from robustedit.rep.adaptor import gate_values
from robustedit.rep.compose import composed_adaptor_forward
from robustedit.tokens import encode_with_span


def edit_keys(lm, layer: int, cases: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """k_i, the down_proj input at the subject's last token of each case's bare edit prompt [n, D], and the
    inputs at every position of each prompt ([P_i, D] each)."""
    tok = lm.tokenizer
    enc = []
    for c in cases:
        start = c["prompt"].index(c["subject"])
        enc.append(encode_with_span(tok, c["prompt"], start, start + len(c["subject"]), f"case {c['case_id']}: "))
    down_proj = lm.arch.module(lm.model, "down_proj", layer)
    every = read_down_proj(lm.model, down_proj, [e[0] for e in enc], [range(len(e[0])) for e in enc],
                           pad_id=tok.pad_token_id).float()
    rows = list(torch.split(every, [len(e[0]) for e in enc]))
    return torch.stack([row[e[1]] for row, e in zip(rows, enc)]), rows


def foreign_edits_firing(rows: list[torch.Tensor], u: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Per case i: how many cases j != i have u_jᵀx_p / u_jᵀk_j > 0.5 at some position p >= 1 of rows[i]."""
    out = []
    for i, x in enumerate(rows):
        fires = ((x[1:] @ u.T) / base > 0.5).any(0)  # [n]
        fires[i] = False
        out.append(fires.sum())
    return torch.stack(out).float()


def interval(values: torch.Tensor, minus: torch.Tensor | None = None, percent: bool = False) -> str:
    """Mean over cases with its 95% case-level bootstrap interval (the tables' resampling, which reports
    means in percent: `percent` keeps them so, for 0/1 values); with `minus`, the paired difference
    values − minus on the same cases."""
    def table(v):
        return case_sums([(i, {"x": [float(x)]}) for i, x in enumerate(v.tolist())], ["x"])
    iv = (bootstrap_interval(table(values)) if minus is None else paired_difference(table(values), table(minus)))["x"]
    scale = 1.0 if percent else 0.01
    return f"{scale * iv.value:.2f} [{scale * iv.lo:.2f}, {scale * iv.hi:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--overrides", default="job.split=test", help="space-separated config overrides")
    ap.add_argument("--thresholds", nargs="+", type=float, default=[0.5, 0.9])
    ap.add_argument("--n-edits", nargs="+", type=int, default=[10, 50, 107])
    args = ap.parse_args()
    cfg = compose(args.overrides.split())
    saved = torch.load(stage_file(cfg, "rep", "adaptors"), weights_only=True)
    edits = torch.load(stage_file(cfg, "rome", "edits"), weights_only=True)
    cases = {c["case_id"]: c for c in read_jsonl(stage_file(cfg, "cases", "cases"))}
    edited = set(edits["case_ids"])
    ids = [c for c in saved["case_ids"] if c in edited]
    u = edits["u"][[edits["case_ids"].index(c) for c in ids]].float()  # [n, D]
    states = dict(zip(saved["case_ids"], saved["states"]))
    lm = load_model(str(model_dir(cfg)), cfg["model"], device="cpu")
    keys, rows = edit_keys(lm, saved["layer"], [cases[c] for c in ids])
    base = (u * keys).sum(1)  # u_iᵀk_i
    stacked, acfg = stack_states([states[c] for c in ids], keys.shape[1])
    stacked = {k: v.float() for k, v in stacked.items()}
    with torch.no_grad():
        gates = torch.stack([gate_values({k: v[j] for k, v in stacked.items()}, acfg, keys) for j in range(len(ids))],
                            dim=1)  # [case i, adaptor j]
        # r_i with case i's own adaptor alone: independent of N
        r_alone = {t: torch.stack([(u[i] * composed_adaptor_forward({k: v[i:i + 1] for k, v in stacked.items()},
                                                                    acfg, keys[i:i + 1], t)[0]).sum()
                                   for i in range(len(ids))]) / base for t in args.thresholds}
    print(f"{len(ids)} cases with an adaptor and a ROME edit; layer {saved['layer']}; means over cases with 95% "
          "case-level bootstrap intervals")
    for n in [m for m in args.n_edits if m <= len(ids)]:
        sub = {k: v[:n] for k, v in stacked.items()}
        plain = foreign_edits_firing(rows[:n], u[:n], base[:n])
        for t in args.thresholds:
            g = gates[:n, :n] > t
            own = g.diagonal()
            foreign = (g.sum(1) - own.int()).float()
            with torch.no_grad():
                r_all = (u[:n] * composed_adaptor_forward(sub, acfg, keys[:n], t)).sum(1) / base[:n]
                adapted = foreign_edits_firing([composed_adaptor_forward(sub, acfg, x, t) for x in rows[:n]],
                                               u[:n], base[:n])
            off_own = interval(((r_alone[t][:n] < 0.5) | (r_alone[t][:n] > 1.5)).float(), percent=True)
            off_all = interval(((r_all < 0.5) | (r_all > 1.5)).float(), percent=True)
            print(f"N={n:4d} t={t:.2f}: own gate open on {100.0 * own.float().mean():.1f}% of cases; foreign gates "
                  f"open per case {interval(foreign)}; r median own adaptor {r_alone[t][:n].median():.2f}, all "
                  f"composed {r_all.median():.2f}; % of r outside [0.5, 1.5] own {off_own}, composed {off_all}; "
                  f"other edits firing at half strength or more per case: edits alone {interval(plain)}, adaptors "
                  f"composed {interval(adapted)}, composed − alone {interval(adapted, plain)}")


if __name__ == "__main__":
    main()
