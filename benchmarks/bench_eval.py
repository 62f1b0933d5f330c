"""Sequential vs batched evaluation of rank-one edits on the real SmolLM2-135M (layer 4), CPU.

Quick CounterFact robustness records are made from the REP valid split: subject-rephrase halves as
ID/OOD, up to 3 made-up shuffles (word/character swaps), two 300-word WikiText passages (eval and
eval_ood), paraphrase = the first 2 rephrase prompts, Patil = the rest but the last (the prompt itself).
Edits are random rank-one (u, v). The script checks that both paths give identical argmax-based
metrics, then prints items/s, cases/s and the speed ratios (sequential, batched, and batched without
packing an item and its alternative into one row).

    .venv/bin/python benchmarks/bench_eval.py --n-cases 16 --batch-size 32
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from robustedit.data.perturb import long_context, split_id_ood, wikitext_words
from robustedit.edits import RankOneEdit
from robustedit.evaluate import evaluate_cases, summarise
from robustedit.models.load import load_model

REPO = Path(__file__).resolve().parents[1]
EXACT_FIELDS = ("argmax_ids", "alt_argmax_ids", "exact_match@1", "token_mean_acc@1", "prob_compare@1",
                "locality_agreement@1")


def made_up_shuffles(subject: str, n: int, rng: random.Random) -> list[str]:
    """Up to n distinct variants: word orders first, then two adjacent characters of a word swapped."""
    words, out = subject.split(), []
    for _ in range(200):
        if len(out) >= n:
            break
        w = words[:]
        if len(w) > 1 and rng.random() < 0.7:
            rng.shuffle(w)
        else:
            k = rng.randrange(len(w))
            if len(w[k]) > 1:
                i = rng.randrange(len(w[k]) - 1)
                w[k] = w[k][:i] + w[k][i + 1] + w[k][i] + w[k][i + 2:]
        text = " ".join(w)
        if text != subject and text not in out:
            out.append(text)
    return out


def quick_records(n: int, words: list[str], seed: int) -> list[dict]:
    rep = json.loads((REPO / "resources/data/rep/valid.counterfact_para_prompt_para_subject.json").read_text())
    records = []
    for r in rep[:n]:
        rng = random.Random(seed * 100003 + r["case_id"])
        records.append({
            "case_id": r["case_id"], "split": "valid", "subject": r["subject"], "prompt": r["prompt"],
            "target_new": r["target_new"], "target_true": r["target_true"],
            "paraphrase_prompts": r["rephrase_prompt"][:2], "patil_prompts": r["rephrase_prompt"][2:-1],
            "neighborhood_prompts": r["locality_prompt"], "locality_ground_truth": r["locality_ground_truth"],
            "subject_rephrases": {**split_id_ood(r["subject_rephrase"], 0.5), "source": "dataset"},
            "shuffled_subjects": split_id_ood(made_up_shuffles(r["subject"], 3, rng), 0.5),
            "long_context": {"eval": long_context(words, 300, rng), "eval_ood": long_context(words, 300, rng),
                             "held": []},
        })
    return records


def random_edits(model, arch, layer: int, n: int, v_norm: float, seed: int) -> list[RankOneEdit]:
    g = torch.Generator().manual_seed(seed)
    lin = arch.module(model, "down_proj", layer)
    edits = []
    for _ in range(n):
        u = torch.randn(lin.in_features, generator=g)
        v = torch.randn(lin.out_features, generator=g)
        edits.append(RankOneEdit(layer, u / u.norm(), v_norm * v / v.norm()))
    return edits


def timed(fn):
    """(result, wall seconds, process CPU seconds); CPU time is less distorted by other jobs on a shared machine."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cases", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)  # rows per forward (longest rows batched together)
    ap.add_argument("--layer", type=int, default=4)  # SmolLM2's ROME layer in conf/model/smollm2-135m.yaml
    ap.add_argument("--v-norm", type=float, default=100.0)  # edit strength |v| with |u| = 1 (moves some argmaxes)
    ap.add_argument("--threads", type=int, default=2)  # the machine has 2 cores
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/smollm2-135m.yaml"))
    lm = load_model(REPO / "resources/models/smollm2-135m", cfg, device="cpu", dtype="float32")
    text = (REPO / "resources/data/wikitext/wiki.valid.raw").read_text(encoding="utf-8")
    cases = quick_records(args.n_cases, wikitext_words([text]), args.seed)
    edits = random_edits(lm.model, lm.arch, args.layer, len(cases), args.v_norm, args.seed)
    run = dict(model=lm.model, tok=lm.tokenizer, arch=lm.arch, cases=cases, edits=edits,
               batch_size=args.batch_size, device="cpu")

    pre_run, *t_pre = timed(lambda: evaluate_cases(**{**run, "edits": None}, mode="batched"))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    seq, *t_seq = timed(lambda: evaluate_cases(**run, mode="sequential", pre_from=pre_run))
    bat, *t_bat = timed(lambda: evaluate_cases(**run, mode="batched", pre_from=pre_run))
    unpacked, *t_unp = timed(lambda: evaluate_cases(**run, mode="batched", pre_from=pre_run, pack=False))
    weights_same = all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())

    n_items = sum(len(c["items"]) for c in seq)
    n_rows = 2 * n_items  # every item is scored for its target and its alternative
    n_tokens = sum(len(it["target_ids"]) + len(it["alt_target_ids"]) for c in seq for it in c["items"])
    mismatches = [(c["case_id"], it["group"], f) for other in (bat, unpacked) for c, d in zip(seq, other)
                  for it, jt in zip(c["items"], d["items"]) for f in EXACT_FIELDS if it[f] != jt[f]]
    lp_diff = max(abs(a - b) for c, d in zip(seq, bat) for it, jt in zip(c["items"], d["items"])
                  for a, b in zip(it["token_logprobs"], jt["token_logprobs"]))
    changed = sum(it["argmax_ids"] != it["pre"]["argmax_ids"] for c in bat for it in c["items"])
    tables_equal = all(summarise(seq, m, a) == summarise(bat, m, a)
                       for m in ("exact_match", "token_mean_acc", "prob_compare") for a in ("micro", "case_mean"))

    print(f"model smollm2-135m layer {args.layer}, {len(cases)} cases, {n_items} items "
          f"({n_rows} scored rows, {n_tokens} target tokens), batch_size {args.batch_size}, threads {args.threads}")
    print(f"items whose argmax changed under the edit: {changed}/{n_items}")
    print(f"identical argmax-based metrics: {not mismatches} ({len(mismatches)} mismatching fields); "
          f"summary tables equal: {tables_equal}; max |Δ log-prob| {lp_diff:.2e}; "
          f"weights bit-identical: {weights_same}")
    for name, (wall, cpu) in (("pre (unedited, batched)", t_pre), ("sequential", t_seq), ("batched", t_bat),
                              ("batched, unpacked", t_unp)):
        print(f"{name:>24}: wall {wall:7.1f} s {n_items / wall:6.2f} items/s {len(cases) / wall:6.3f} cases/s | "
              f"cpu {cpu:7.1f} s {n_items / cpu:6.2f} items/cpu-s {len(cases) / cpu:6.3f} cases/cpu-s")
    print(f"batched / sequential speed ratio: wall {t_seq[0] / t_bat[0]:.2f}x, cpu {t_seq[1] / t_bat[1]:.2f}x")
    print(f"packed / unpacked (item + alternative in one row) speed ratio: wall {t_unp[0] / t_bat[0]:.2f}x, "
          f"cpu {t_unp[1] / t_bat[1]:.2f}x")
    table = summarise(bat, "exact_match", "micro")
    print("exact_match@1 micro (post):", {k: round(v, 1) for k, v in table["columns"].items()})
    pre_table = summarise(bat, "exact_match", "micro", stage="pre")
    print("exact_match@1 micro (pre): ", {k: round(v, 1) for k, v in pre_table["columns"].items()})
    if mismatches:
        print("first mismatches:", mismatches[:10])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
