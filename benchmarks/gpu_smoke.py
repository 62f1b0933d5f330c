"""GPU smoke test: every editing stage once, on random weights of the real LLaMA-2-7B / Mistral-7B shapes.

    PYTHONPATH=workflow python benchmarks/gpu_smoke.py --family both              # one CUDA GPU, bf16
    PYTHONPATH=workflow python benchmarks/gpu_smoke.py --tiny --device cpu        # tiny shapes (tests)

Needs only torch, transformers, tokenizers and the library (PYTHONPATH=workflow): no network, hub, Snakemake,
Hydra or faiss. The tokenizer is a byte-level BPE trained here on the vendored WikiText (BOS "<s>" prepended,
"</s>", "<unk>", no pad token, as LLaMA-2/Mistral); the model is built on --device by transformers' own init
(normal(0, 0.02) linears, unit norms), never on the CPU in fp32. Cases: the first --n-cases records of the
family's REP test split, built by the library's data functions (no known-fact filter). Steps, in order, per family:

    init (build the model), stats (compute_second_moment on WikiText lines), templates (ROME's context
    templates), rome (execute_rome_detailed, one v* batch, MomentSolver on the device), eval (evaluate_cases,
    batched), rep_fit (fit_rep_adaptor per case, gate objective on), rep_eval (the trained adaptors in an
    --n-stack wide RepEditBatch, the other rows freshly initialised), reader (ChatReader, EREN prompts)

One JSON line per step on stdout ({"family", "step", "seconds", "peak_gpu_mem_gb", "ok", facts...}); a
failing step prints "ok": false with the error (traceback on stderr), the family's later steps are
reported as not run, and the exit code is 1. --fail-step STEP injects a failure.

Time on one H100/H200, estimated from the shapes (no GPU was lent while this was written), LLaMA / Mistral:
init 2-5 s (12.6 / 13.5 GiB allocated and normal_-filled on the GPU); stats ~1 s (35k tokens through layers
0-5, ~85 TFLOP bf16, plus 9 / 15 TFLOP of float64 D x D sums); templates ~1 s (65 uncached forwards of 2 short
rows, ~10 ms each, weight-read bound); rome 3-6 s (a full pass over 176 rows, then 10 steps of ~700 suffix
tokens through 27 layers, forward and backward, <= 4 forwards a step); eval 3-6 s (pre + post over 359
packed rows of 10.4k tokens, ~270 TFLOP, and ~2k tokenizer calls); rep_fit 6-15 s (1846 prompts, 45k tokens
to layer 5, CPU bookkeeping); rep_eval 15-30 / 25-100 s, CPU bound: 392 fresh adaptors drawn on the CPU
(0.09-0.14 / 0.16-0.22 s each on this 2-core VM, spread over 8 threads), a 19 / 32 GiB torch.stack and its
host-to-device copy, then the post-edit evaluation; reader < 1 s. Per family ~45-70 / 70-150 s; both with
imports and CUDA start 2-4 min (limit 8). Peak GPU memory ~36 / 52 GiB (rep_eval: model + stack + 3 / 5 GiB
of adaptors gathered per 64-row batch); host RAM ~40 / 65 GiB there. --tiny on 2 CPU cores: ~15-30 s.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "resources" / "data"
WIKI = [DATA / "wikitext" / "wiki.valid.raw", DATA / "wikitext" / "wiki.test.raw"]
STEPS = ("init", "stats", "templates", "rome", "eval", "rep_fit", "rep_eval", "reader")
SHAPES = {  # the published configs; max positions and norm eps as the checkpoints' config.json
    "llama": ("LlamaConfig", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                  max_position_embeddings=4096, rms_norm_eps=1e-5)),
    "mistral": ("MistralConfig", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                                      sliding_window=4096, max_position_embeddings=32768, rms_norm_eps=1e-5)),
}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4)
SPLIT = {"llama": "llama2-7b", "mistral": "mistral"}  # conf/model/*.yaml rep_test_variant


# Budget knobs: (default, --tiny default). 400 WikiText lines = 35k tokens, 2.5x Mistral's key dim 14336, so C
# is invertible (--tiny: 50 lines, 6k tokens for key dim 128); v* steps (the REP release runs 25; early stop is
# off here: worst-case time); REP steps per case (conf/rep/default.yaml runs 50); evaluation rows per forward
# (conf/hardware/gpu.yaml 64; --tiny 16 as cpu.yaml); CPU threads (None = torch's; --tiny 1: tiny matmuls gain
# nothing from threads, and OpenMP threads crawl on a shared, loaded CPU).
BUDGET = {"stats_lines": (400, 50), "v_steps": (10, 3), "rep_steps": (10, 3), "batch_size": (64, 16),
          "threads": (None, 1)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["llama", "mistral", "both"], default="both")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                    help="model weights; default bfloat16 on CUDA (conf/hardware/gpu.yaml), else float32")
    ap.add_argument("--tiny", action="store_true", help="hidden 64, 4 layers, edit layer 1, vocab 2000")
    ap.add_argument("--n-cases", type=int, default=8, help="cases (one ROME v* batch: rome.batch_cases=8)")
    for name in BUDGET:
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="see BUDGET")
    ap.add_argument("--n-stack", type=int, default=400, help="adaptors stacked at REP evaluation (the test split)")
    ap.add_argument("--max-new-tokens", type=int, default=20, help="reader budget (EREN's max_length=20)")
    ap.add_argument("--seed", type=int, default=0, help="weights, templates, REP and case perturbations")
    ap.add_argument("--fail-step", choices=STEPS, default=None, help="raise inside this step (tests)")
    args = ap.parse_args(argv)
    if not 1 <= args.n_cases <= args.n_stack:
        ap.error("need 1 <= --n-cases <= --n-stack")
    for name, (real, tiny) in BUDGET.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else real)
    return args


def build_tokenizer(vocab_size: int):
    """Byte-level BPE trained on the vendored WikiText: ids 0/1/2 = <unk>/<s>/</s> as LLaMA-2, BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = [line for f in WIKI for line in f.read_text(encoding="utf-8").split("\n") if line.strip()]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if tok.pad_token_id is not None or tok.bos_token_id != 1 or len(tok) > vocab_size:
        raise RuntimeError(f"unexpected tokenizer: pad {tok.pad_token_id}, bos {tok.bos_token_id}, {len(tok)} tokens")
    return tok


def build_cases(tok, family: str, n: int, seed: int) -> list[dict]:
    """The first n records of the family's REP test split as built cases (conf/data/default.yaml values)."""
    from robustedit.data.cases import attach_perturbations, attach_rephrases
    from robustedit.data.counterfact import join_case, pool_index
    from robustedit.data.perturb import wikitext_words

    rel = f"rep/test.counterfact_para_prompt_para_subject_{SPLIT[family]}.json"
    read = lambda p: json.loads((DATA / p).read_text(encoding="utf-8"))  # noqa: E731
    pool = pool_index(read("counterfact/counterfact_filtered.json"), "counterfact_filtered.json")
    patil, words = read("counterfact/patil_paraphrases.json"), wikitext_words([f.read_text() for f in WIKI])
    cases = []
    for i, rec in enumerate(read(rel)[:n]):
        c = join_case(rec, pool, patil, "test", rel, i)
        c = attach_rephrases(c, c["dataset_subject_rephrases"], "dataset", 10, 0.5)  # 10 rephrases, ID half
        cases.append(attach_perturbations(c, tok, words, seed=seed, n_shuffles=10, n_words=300, n_held=5,
                                          id_fraction=0.5))  # 10 shuffles, 300-word passages, 5 held
    return cases


class StackView:
    """evaluate.EditBatch: case i of the evaluated list is row rows[i] of a wider EditBatch."""

    def __init__(self, inner, rows: list[int]):
        self.inner, self.rows = inner, torch.tensor(rows, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def for_case(self, i: int):
        return self.inner.for_case(int(self.rows[i]))

    def for_rows(self, case_index_per_row: torch.Tensor):
        return self.inner.for_rows(self.rows.to(case_index_per_row.device)[case_index_per_row])


class Runner:
    """Runs named steps, printing one JSON line each; after a failure the family's later steps are not run."""

    def __init__(self, device: torch.device, fail_step: str | None):
        self.device, self.cuda, self.fail_step, self.failed = device, device.type == "cuda", fail_step, []

    def expect_device(self, what: str, *tensors: torch.Tensor) -> None:
        """Library results must sit on --device: a CPU tensor here means a silent CPU fallback or a mix."""
        for t in tensors:
            if t.device.type != self.device.type:
                raise RuntimeError(f"{what} is on {t.device}, expected {self.device}")

    def step(self, family: str, name: str, fn) -> bool:
        rec = {"family": family, "step": name, "seconds": None, "peak_gpu_mem_gb": None}
        if any(f[0] == family for f in self.failed):
            print(json.dumps({**rec, "ok": False, "error": "not run: an earlier step failed"}), flush=True)
            return False
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            if name == self.fail_step:
                raise RuntimeError(f"injected failure (--fail-step {name})")
            facts, ok = fn() or {}, True
            if self.cuda:
                torch.cuda.synchronize(self.device)
        except Exception as e:  # reported, never swallowed: ok false, traceback on stderr, exit code 1
            traceback.print_exc()
            facts, ok = {"error": f"{type(e).__name__}: {e}"}, False
            self.failed.append((family, name))
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        if self.cuda:
            rec["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)  # GiB
        print(json.dumps({**rec, "ok": ok, **facts}), flush=True)
        return ok


def mean(xs) -> float:
    xs = list(xs)
    return round(sum(xs) / len(xs), 4)


def run_family(family: str, args, tok, cases: list[dict], run: Runner) -> None:
    import transformers
    from transformers import AutoModelForCausalLM

    from robustedit.eren.prompts import make_context, qa_prompt
    from robustedit.eren.reader import ChatReader
    from robustedit.evaluate import evaluate_cases, summarise
    from robustedit.evaluate.leakage import leak_guard
    from robustedit.models.arch import Architecture
    from robustedit.rep import (AdaptorConfig, RepEditBatch, RepTrainConfig, adaptor_state, fit_rep_adaptor,
                                init_params)
    from robustedit.rome import (MomentSolver, ROMEHyperParams, compute_second_moment, execute_rome_detailed,
                                 generate_context_templates)
    from robustedit.seeding import torch_generator

    dev, S = torch.device(args.device), {}
    layer = 1 if args.tiny else 5  # conf/model/{llama2-7b,mistral-7b}.yaml: the papers' ROME layer 5
    hp = ROMEHyperParams(v_num_grad_steps=args.v_steps, early_stop_loss=None)  # no early stop: worst-case time
    acfg = AdaptorConfig()  # conf/rep/release.yaml adaptor, deterministic evaluation (conf/rep/default.yaml)
    tcfg = RepTrainConfig(steps=args.rep_steps, gate_loss_weight=1.0, gate_max_negatives=4096, gate_lr=1e-3)

    def success(results, stage="post") -> float:  # exact match on the edit prompt, % (Table 1's metric)
        return summarise(results, "exact_match", stage=stage)["columns"]["success"]

    def init():
        cls, shape = SHAPES[family]
        if args.tiny:
            shape = {**shape, **TINY, "num_key_value_heads": 4 if family == "llama" else 2, "vocab_size": len(tok)}
        cfg = getattr(transformers, cls)(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=None, tie_word_embeddings=False)
        if len(tok) > cfg.vocab_size:
            raise ValueError(f"tokenizer has {len(tok)} tokens, the model's vocabulary {cfg.vocab_size}")
        torch.manual_seed(args.seed)
        with dev:  # parameters are allocated and initialised on the device
            model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, args.dtype))
        model.eval().requires_grad_(False)
        S["model"], S["arch"] = model, Architecture(family, cfg.num_hidden_layers)
        S["arch"].check(model)
        run.expect_device("model weights", *model.parameters())
        return {"params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "layer": layer,
                "vocab": cfg.vocab_size, "tokenizer_vocab": len(tok), "dtype": args.dtype, "device": str(dev)}

    def stats():
        lines = [line for line in WIKI[0].read_text(encoding="utf-8").split("\n") if line.strip()]  # stats.drop_empty
        res = compute_second_moment(S["model"], tok, S["arch"], layer, lines, n_samples=args.stats_lines,
                                    seed=1, max_length=4096, device=dev)  # conf/stats/wikitext.yaml values
        run.expect_device("second moment", res.moment)
        S["moment"] = res.moment
        return {"docs": res.stats["docs"], "tokens": res.stats["tokens"], "key_dim": res.moment.shape[0]}

    def templates():
        S["templates"] = generate_context_templates(
            S["model"], tok, torch.Generator().manual_seed(args.seed), length_params=hp.context_template_length_params,
            prefixes=hp.template_prefixes, top_k=hp.template_top_k, device=dev)
        return {"templates": len(S["templates"])}

    def rome():
        solver = MomentSolver(S["moment"].to(dev))  # factor on the device, so C^-1 k is computed there
        out = execute_rome_detailed(S["model"], tok, S["arch"], cases, solver, S["templates"], hp, dev, layer)
        S["edits"] = [e for e, _ in out]
        run.expect_device("ROME edits", *[t for e in S["edits"] for t in (e.u, e.v)])
        if not all(torch.isfinite(e.u).all() and torch.isfinite(e.v).all() for e in S["edits"]):
            raise FloatingPointError("non-finite ROME edit")
        return {"cases": len(out), "v_steps": hp.v_num_grad_steps,
                "vstar_loss_first": mean(r.losses[0] for _, r in out),
                "vstar_loss_last": mean(r.losses[-1] for _, r in out)}

    def evaluate():
        S["eval"] = evaluate_cases(S["model"], tok, S["arch"], cases, S["edits"], args.batch_size, dev, "batched",
                                   long_id_passages=1)  # conf/eval/default.yaml
        return {"cases": len(cases), "items": sum(len(c["items"]) for c in S["eval"]),
                "success_em_pre": success(S["eval"], "pre"), "success_em_post": success(S["eval"])}

    def rep_fit():
        down = S["arch"].module(S["model"], "down_proj", layer)
        S["rep"] = [fit_rep_adaptor(S["model"], tok, down, c, S["templates"], e.u, leaks=leak_guard(tok, c),
                                    acfg=acfg, tcfg=tcfg, seed=args.seed, device=dev)
                    for c, e in zip(cases, S["edits"])]
        logs = [r.log for r in S["rep"]]
        return {"cases": len(logs), "rep_steps": tcfg.steps, "pool": sum(sum(g["pool"].values()) for g in logs),
                "loss_first": mean(g["steps"][0]["loss"] for g in logs),
                "loss_last": mean(g["steps"][-1]["loss"] for g in logs)}

    def rep_eval():
        n, key_dim = args.n_stack, S["moment"].shape[0]
        rows = [(i + 1) * (n // len(cases)) - 1 for i in range(len(cases))]  # spread out, the last row included
        fresh_rows, t0 = [r for r in range(n) if r not in rows], time.perf_counter()

        def fresh(r: int) -> dict:  # drawn on the CPU from its own generator, as fit_rep_adaptor's init
            return adaptor_state(init_params(key_dim, acfg, torch_generator(args.seed, "smoke", r)), acfg)

        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # torch ops drop the GIL: threads help
            states = dict(zip(fresh_rows, pool.map(fresh, fresh_rows)))
        init_s = time.perf_counter() - t0
        states.update({r: res.state for r, res in zip(rows, S["rep"])})
        edits = dict(zip(rows, S["edits"]))
        batch = RepEditBatch(S["model"], S["arch"], layer, [edits.get(r) for r in range(n)],
                             [states[r] for r in range(n)], dev)
        del states
        run.expect_device("stacked adaptors", *batch.stacked.values())
        res = evaluate_cases(S["model"], tok, S["arch"], cases, StackView(batch, rows), args.batch_size, dev,
                             "batched", pre_from=S["eval"], long_id_passages=1)
        gb = sum(t.numel() * t.element_size() for t in batch.stacked.values()) / 2**30
        return {"stack": n, "trained": len(rows), "fresh_init_s": round(init_s, 2), "stack_gb": round(gb, 3),
                "items": sum(len(c["items"]) for c in res), "success_em_post": success(res)}

    def reader():
        prompts = [qa_prompt(make_context([f"{c['prompt']} {c['target_new']}"]),
                             (c["paraphrase_prompts"] or [c["prompt"]])[0], two_step=True) for c in cases]
        chat = ChatReader(S["model"], tok, device=dev, batch_size=len(prompts), use_chat_template=False)
        out = chat.generate(prompts, max_new_tokens=args.max_new_tokens)
        if len(out) != len(prompts):
            raise RuntimeError(f"{len(out)} outputs for {len(prompts)} prompts")
        n_tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in out)
        return {"prompts": len(prompts), "output_tokens": n_tokens}

    for name, fn in zip(STEPS, (init, stats, templates, rome, evaluate, rep_fit, rep_eval, reader)):
        run.step(family, name, fn)
    S.clear()


def main(argv=None) -> int:
    args = parse_args(argv)
    dev = torch.device(args.device)
    args.dtype = args.dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    families = ["llama", "mistral"] if args.family == "both" else [args.family]
    run, t0, data = Runner(dev, args.fail_step), time.perf_counter(), {}

    def setup():
        data["tok"] = build_tokenizer(2000 if args.tiny else 32000)  # tiny: a small vocabulary, a tiny model
        data["cases"] = {f: build_cases(data["tok"], f, args.n_cases, args.seed) for f in families}
        return {"tokenizer_vocab": len(data["tok"]), "cases": {f: len(c) for f, c in data["cases"].items()},
                "torch": torch.__version__}

    if run.step("all", "setup", setup):
        for family in families:
            run_family(family, args, data["tok"], data["cases"][family], run)
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()  # the next family's model gets the memory back
    print(json.dumps({"family": "all", "step": "total", "seconds": round(time.perf_counter() - t0, 3),
                      "peak_gpu_mem_gb": None, "ok": not run.failed,
                      "failed": [f"{f}/{s}" for f, s in run.failed]}), flush=True)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
