"""Does REP's gate open where it should on a real small model? (SmolLM2-135M, layer 4, CPU.)

For a few REP valid cases: u = ROME's left vector (C⁻¹k̄/‖C⁻¹k̄‖ with --mom2, else k̄/‖k̄‖), an adaptor
trained per case, then the soft gate g at every position of evaluation prompts, by category:
  prompt, ID/OOD subject rephrases (ID = trained), ID/OOD shuffled subjects, CounterFact/Patil paraphrase
  prompts, neighbourhood prompts, a WikiText passage + prompt.
Printed per category: max g over all positions, mean g and the open fraction (g > threshold) at the
subject's last token, the open fraction at all other positions, and the mean cos(key, u) at the subject's
last token before -> after the hard-gated adaptor (and, in brackets, after the soft-gated one). No ROME ΔW
is needed: the gate reads the down_proj input.

    .venv/bin/python benchmarks/rep_gate_probe.py --mom2 results/smollm2-135m/stats/<hash>/mom2.partial.pt
    .venv/bin/python benchmarks/rep_gate_probe.py --gate-loss-weight 1 --steps 100 --gate-lr 1e-3
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

from robustedit.data.perturb import long_context, shuffled_subjects, split_id_ood, wikitext_words
from robustedit.models.load import load_model
from robustedit.evaluate.leakage import LeakGuard  # the probe's cases have no evaluation items; no negatives
from robustedit.rep import AdaptorConfig, RepTrainConfig, fit_rep_adaptor, load_adaptor_state
from robustedit.rep.adaptor import adaptor_forward, gate_values
from robustedit.readout import read_down_proj
from robustedit.tokens import encode_with_span
from robustedit.rome.compute_u import MomentSolver, compute_u

REPO = Path(__file__).resolve().parents[1]
SIMPLE_PREFIXES = ["The", "Therefore", "Because", "I", "You", "It", "This", "We", "He", "She", "They", "In fact",
                   "So", "And", "But", "Then", "Also", "Yes", "Well", "Now"]  # fallback: ["{}"] + "P. {}"


def build_case(rec: dict, tok, words: list[str], seed: int) -> dict:
    rng = random.Random(seed * 1000 + rec["case_id"])
    shuf = shuffled_subjects(tok, rec["subject"], 10, rng)
    return {"case_id": rec["case_id"], "prompt": rec["prompt"], "subject": rec["subject"],
            "subject_rephrases": split_id_ood(rec["subject_rephrase"], 0.5),
            "shuffled_subjects": split_id_ood(shuf, 0.5),
            "long_context": {"eval": long_context(words, 300, rng),
                             "held": [long_context(words, 300, rng) for _ in range(5)]},
            "paraphrases": rec["rephrase_prompt"][:-1], "neighborhood_prompts": rec["locality_prompt"]}


def eval_prompts(case: dict) -> dict[str, list[tuple[str, tuple[int, int] | None]]]:
    """category -> [(text, subject span or None)]."""
    p, s = case["prompt"], case["subject"]
    i = p.index(s)

    def sub(v):
        return (p[:i] + v + p[i + len(s):], (i, i + len(v)))

    off = len(case["long_context"]["eval"]) + 1
    return {
        "prompt": [(p, (i, i + len(s)))],
        "reph_ID": [sub(v) for v in case["subject_rephrases"]["id"]],
        "reph_OOD": [sub(v) for v in case["subject_rephrases"]["ood"]],
        "shuf_ID": [sub(v) for v in case["shuffled_subjects"]["id"]],
        "shuf_OOD": [sub(v) for v in case["shuffled_subjects"]["ood"]],
        "paraphrase": [(t, None) for t in case["paraphrases"]],
        "neighbour": [(t, None) for t in case["neighborhood_prompts"]],
        "long": [(f"{case['long_context']['eval']} {p}", (off + i, off + i + len(s)))],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-cases", type=int, default=3)
    ap.add_argument("--mom2", type=Path, default=None, help="second-moment state (sum, count) for u = C^-1 k")
    ap.add_argument("--templates", type=Path, default=None, help="templates.json from the templates stage")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--gate-lr", type=float, default=None)
    ap.add_argument("--gate-loss-weight", type=float, default=0.0)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/smollm2-135m.yaml"))
    lm = load_model(REPO / "resources/models/smollm2-135m", cfg, device="cpu")
    model, tok, arch, layer = lm.model, lm.tokenizer, lm.arch, cfg["layer"]
    dp = arch.module(model, "down_proj", layer)
    templates = (json.loads(args.templates.read_text()) if args.templates
                 else ["{}"] + [f"{p}. {{}}" for p in SIMPLE_PREFIXES])
    words = wikitext_words([(REPO / "resources/data/wikitext/wiki.valid.raw").read_text()])
    recs = json.loads((REPO / "resources/data/rep/valid.counterfact_para_prompt_para_subject.json").read_text())
    cases = [build_case(r, tok, words, args.seed) for r in recs[:args.n_cases]]
    solver = None
    if args.mom2:
        st = torch.load(args.mom2, weights_only=True)
        solver = MomentSolver(st["sum"] / st["count"])
        print(f"C from {st['count']} tokens ({st.get('n_docs_done')} docs)")
    us = compute_u(model, tok, arch, layer, cases, templates, solver, "cpu").float()
    acfg = AdaptorConfig(threshold=args.threshold)
    soft = AdaptorConfig(threshold=args.threshold, dropout=0.0)  # to read the soft-gated adaptor
    tcfg = RepTrainConfig(steps=args.steps, lr=args.lr, gate_lr=args.gate_lr, gate_loss_weight=args.gate_loss_weight,
                          long_context_aug=True, compat_long_noop=True)  # the release: long items silently dropped
    print(f"templates: {len(set(templates))} distinct of {len(templates)}; "
          f"u: {'C^-1 k' if solver else 'k'} normalised; "
          f"adaptor {acfg}; train {tcfg}")

    agg = defaultdict(lambda: defaultdict(list))
    for case, u in zip(cases, us):
        t0 = time.time()
        res = fit_rep_adaptor(model, tok, dp, case, templates, u, leaks=LeakGuard([]).leaks, acfg=acfg, tcfg=tcfg,
                              seed=args.seed)
        params, _ = load_adaptor_state(res.state)
        steps = res.log["steps"]
        print(f"\ncase {case['case_id']} ({case['subject']!r}): pool {res.log['pool']}, {time.time() - t0:.1f}s; "
              f"loss {steps[0]['loss']:.4f} -> {steps[-1]['loss']:.4f} "
              f"(agg {steps[0]['agg']:.4f} -> {steps[-1]['agg']:.4f}, "
              f"consistency {steps[-1]['consistency']:.2e}); gate on training keys "
              + json.dumps({k: v and {kk: round(vv, 3) for kk, vv in v.items()} for k, v in res.log["gate"].items()
                            if k != "threshold"}))
        for cat, items in eval_prompts(case).items():
            enc = [(tok(t)["input_ids"], None if sp is None else encode_with_span(tok, t, sp)[1]) for t, sp in items]
            keys = torch.split(read_down_proj(model, dp, [e[0] for e in enc], [range(len(e[0])) for e in enc],
                                              pad_id=tok.pad_token_id, by_length=False).float(),
                               [len(e[0]) for e in enc])
            for k, (_, idx) in zip(keys, enc):
                g = gate_values(params, acfg, k)
                agg[cat]["max"].append(g.max().item())
                other = torch.ones(len(g), dtype=torch.bool)
                if idx is not None:
                    other[idx] = False
                    agg[cat]["g_sub"].append(g[idx].item())
                    a = adaptor_forward(params, acfg, k[idx], "test")
                    agg[cat]["cos_before"].append(torch.dot(k[idx] / k[idx].norm(), u).item())
                    agg[cat]["cos_after"].append(torch.dot(a / a.norm(), u).item())
                    a = adaptor_forward(params, soft, k[idx], "train")  # soft gate, no dropout
                    agg[cat]["cos_soft"].append(torch.dot(a / a.norm(), u).item())
                agg[cat]["open_other"].extend((g[other] > args.threshold).float().tolist())
    thr = args.threshold
    print(f"\n{'category':<11} {'max g':>7} {'mean g@subj':>12} {'open@subj':>10} {'open@other':>11} "
          f"{'cos(k,u) before->hard (soft)':>30}")
    for cat, d in agg.items():
        gs = d["g_sub"]
        sub = f"{sum(gs) / len(gs):12.3f} {sum(g > thr for g in gs) / len(gs):10.2f}" if gs else f"{'-':>12} {'-':>10}"
        cos = (f"{sum(d['cos_before']) / len(gs):.3f} -> {sum(d['cos_after']) / len(gs):.3f} "
               f"({sum(d['cos_soft']) / len(gs):.3f})" if gs else "-")
        print(f"{cat:<11} {max(d['max']):7.3f} {sub} {sum(d['open_other']) / len(d['open_other']):11.4f} {cos:>30}")


if __name__ == "__main__":
    main()
