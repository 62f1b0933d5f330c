"""Cost of the generation protocol beside teacher forcing, on the real SmolLM2-135M (layer 4), CPU.

    .venv/bin/python benchmarks/bench_generation.py --n-cases 16

Records are bench_eval.py's quick CounterFact records (REP valid split, dataset rephrases, made-up
shuffles, WikiText passages) with one held long-context passage, as the pipeline scores
(eval.long_id_passages=1). Edits are ROME's without the second moment (u = k̄/‖k̄‖, six fixed templates,
as tests/test_rome_golden.py), so the generations are those of real edits. Timed, as the pipeline runs them,
eval_rome (pre + post, item and alternative packed) and a second method's post phase (eval_rep's shape: the
unedited scores and continuations reused):
  teacher-forced:       evaluate_cases alone;
  both protocols:       evaluate_cases(..., generation=spec), what the pipeline runs: the continuations are
                        decoded from the teacher-forced forward's KV cache (robustedit.evaluate.decoding);
  generation, apart:    generate_cases, the independent implementation (a forward over every prompt again).
Prints seconds per case of each, the generation protocol's added cost over teacher forcing (the issue's
budget: at most the teacher-forced cost), whether both implementations give the same continuations, both
protocols' Table 1 columns, and a few generations. Asserts nothing.
"""
from __future__ import annotations

import argparse
import importlib.util
import random
from pathlib import Path

import torch
from omegaconf import OmegaConf

from robustedit.data.perturb import long_context, wikitext_words
from robustedit.evaluate import evaluate_cases, summarise
from robustedit.evaluate.generation import GenerationSpec, generate_cases
from robustedit.models.load import load_model
from robustedit.rome.execute import execute_rome_detailed
from robustedit.rome.hparams import ROMEHyperParams

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = ["{}", "The following is true. {}", "Therefore, {}", "Because of this, {}", "I read that {}",
             "You may know that {}"]  # tests/test_rome_golden.py's fixed stand-ins for the sampled templates


def bench_eval():
    spec = importlib.util.spec_from_file_location("bench_eval", REPO / "benchmarks" / "bench_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cases", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)  # hardware.batch_size of conf/hardware/cpu.yaml
    ap.add_argument("--generation-batch-size", type=int, default=128)  # rows decoded together by generate_cases
    ap.add_argument("--layer", type=int, default=4)  # SmolLM2's ROME layer in conf/model/smollm2-135m.yaml
    ap.add_argument("--threads", type=int, default=2)  # the machine has 2 cores
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=2)  # cases whose success/rephrase/locality generations print
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    be = bench_eval()

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/smollm2-135m.yaml"))
    lm = load_model(REPO / "resources/models/smollm2-135m", cfg, device="cpu", dtype="float32")
    words = wikitext_words([(REPO / "resources/data/wikitext/wiki.valid.raw").read_text(encoding="utf-8")])
    cases = be.quick_records(args.n_cases, words, args.seed)
    rng = random.Random(args.seed)
    for case in cases:
        case["long_context"]["held"] = [long_context(words, 300, rng)]
    hp = ROMEHyperParams(mom2_adjustment=False, context_template_length_params=((5, 5),), batch_cases=4)
    requests = [{k: c[k] for k in ("case_id", "prompt", "subject", "target_new", "target_true")} for c in cases]
    results, *t_rome = be.timed(lambda: execute_rome_detailed(lm.model, lm.tokenizer, lm.arch, requests, None,
                                                              TEMPLATES, hp, "cpu", args.layer))
    edits = [e for e, _ in results]
    run = dict(model=lm.model, tok=lm.tokenizer, arch=lm.arch, cases=cases, edits=edits,
               batch_size=args.batch_size, device="cpu", long_id_passages=1)

    tf1, *t_tf1 = be.timed(lambda: evaluate_cases(**run, mode="batched"))
    tf2, *t_tf2 = be.timed(lambda: evaluate_cases(**run, mode="batched", pre_from=tf1))
    both1, *t_both1 = be.timed(lambda: evaluate_cases(**run, mode="batched", generation=GenerationSpec()))
    both2, *t_both2 = be.timed(lambda: evaluate_cases(**run, mode="batched", generation=GenerationSpec(),
                                                      pre_from=both1))
    gen = {**run, "batch_size": args.generation_batch_size}
    gen1, *t_gen1 = be.timed(lambda: generate_cases(**gen, spec=GenerationSpec()))
    gen2, *t_gen2 = be.timed(lambda: generate_cases(**gen, spec=GenerationSpec(), pre_from=gen1))

    n, n_items = len(cases), sum(len(c["items"]) for c in tf1)
    n_new = sum(len(it["continuation_ids"]) + len(it["pre"]["continuation_ids"]) for c in gen1 for it in c["items"])
    print(f"model smollm2-135m layer {args.layer}, {n} cases, {n_items} items, batch_size {args.batch_size} "
          f"(generation {args.generation_batch_size}), "
          f"threads {args.threads}; ROME edits {t_rome[0]:.0f} s; generated tokens (pre + post) {n_new}")
    for name, (wall, cpu) in (("teacher-forced, pre + post", t_tf1), ("teacher-forced, post", t_tf2),
                              ("both protocols, pre + post", t_both1), ("both protocols, post", t_both2),
                              ("generation apart, pre + post", t_gen1), ("generation apart, post", t_gen2)):
        print(f"{name:>29}: wall {wall:7.1f} s ({wall / n:5.2f} s/case) | cpu {cpu:7.1f} s ({cpu / n:5.2f} s/case)")
    tf_total, both_total, gen_total = t_tf1[0] + t_tf2[0], t_both1[0] + t_both2[0], t_gen1[0] + t_gen2[0]
    same = [[it["continuation_ids"] for it in c["items"]] for c in both1 + both2] == \
           [[it["continuation_ids"] for it in c["items"]] for c in gen1 + gen2]
    print(f"two methods (eval_rome + eval_rep): teacher-forced {tf_total:.1f} s, both protocols {both_total:.1f} s: "
          f"generation adds {both_total - tf_total:.1f} s = {(both_total - tf_total) / tf_total:.2f} of teacher "
          f"forcing (budget: at most 1); generated apart {gen_total:.1f} s = {gen_total / tf_total:.2f}; "
          f"same continuations both ways: {same}")
    for stage in ("pre", "post"):
        tf = summarise(tf1, "exact_match", "micro", stage=stage)["columns"]
        gen = summarise(gen1, "generation_match", "micro", stage=stage, locality_metric="generation_unchanged")
        print(f"{stage:>4} exact_match@1 (teacher-forced): {({k: round(v, 1) for k, v in tf.items()})}")
        print(f"{stage:>4} generation_match@1 (generation): {({k: round(v, 1) for k, v in gen['columns'].items()})}")
    for case in gen1[:args.show]:
        for group in ("success", "rephrase_id", "locality"):
            it = next(i for i in case["items"] if i["group"] == group)
            print(f"case {case['case_id']} {group}: {it['prompt'][-70:]!r} -> edited {it['continuation']!r} "
                  f"(match {it['generation_match@1']:.0f}), unedited {it['pre']['continuation']!r}; "
                  f"target {it['target']!r}")


if __name__ == "__main__":
    main()
