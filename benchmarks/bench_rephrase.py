"""Benchmark the local subject-rephrase writer: the paper's prompt on real CounterFact subjects.

Prints, per subject, the model's raw reply, what parse_rephrases keeps, and the count; then seconds per
subject for one batch. Asserts nothing. Subjects are evenly spaced over the 1,400-case pool.

    .venv/bin/python benchmarks/bench_rephrase.py                       # 10 subjects, SmolLM2-135M
    .venv/bin/python benchmarks/bench_rephrase.py --n-subjects 4 --max-new-tokens 120 --threads 1
    .venv/bin/python benchmarks/bench_rephrase.py --api http://127.0.0.1:8000/v1 --model <name>
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "resources" / "data" / "counterfact" / "counterfact_filtered.json"


def subjects(n: int) -> list[str]:
    pool = json.loads(POOL.read_text())
    step = max(1, len(pool) // n)
    return [pool[i]["requested_rewrite"]["subject"] for i in range(0, step * n, step)][:n]


def main() -> None:
    from robustedit.data.rephrase import PAPER_PROMPT, fill_prompt, parse_rephrases
    from robustedit.data.rephrase_backends import ApiBackend, LocalChatBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-subjects", type=int, default=10)
    ap.add_argument("--model-dir", default=str(REPO / "resources" / "models" / "smollm2-135m"))
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--api", default=None, help="OpenAI-compatible base_url instead of the local model")
    ap.add_argument("--model", default=None, help="model name for --api")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.api:
        backend = ApiBackend(args.api, args.model, max_tokens=args.max_new_tokens)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model_dir)
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
        backend = LocalChatBackend(model, tok, "cpu", model_name=Path(args.model_dir).name,
                                   max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    names = subjects(args.n_subjects)
    prompts = [fill_prompt(PAPER_PROMPT, s, 10) for s in names]
    print(f"backend {backend.name} {backend.settings}; {len(names)} subjects; torch threads "
          f"{torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    replies = backend.complete(prompts)
    secs = time.perf_counter() - t0
    counts = []
    for name, raw in zip(names, replies):
        kept = parse_rephrases(raw, name, 10)
        counts.append(len(kept))
        print(f"\n=== {name!r}: {len(kept)} kept\n--- raw:\n{raw}\n--- kept: {kept}")
    print(f"\n{len(names)} subjects in {secs:.1f} s = {secs / len(names):.2f} s/subject; "
          f"parsed counts {counts} (mean {sum(counts) / len(counts):.1f} of 10)")


if __name__ == "__main__":
    main()
