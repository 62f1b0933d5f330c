"""Stage `eval_rep`: the robustness evaluation of ROME+REP (each case's rank-one edit plus its adaptor).

    python scripts/eval_rep.py job.split=test rep.gate_threshold=0.8
Same outputs as eval_rome (<split>.results.jsonl, <split>.summary.json, method "ROME+REP"). The
unedited scores are reused from eval_rome's results of the same cases. Only this stage reads
rep.gate_threshold, so a threshold sweep reruns evaluation alone. The adaptors file is memory-mapped
and the cases are evaluated in chunks of at most ADAPTOR_CHUNK_BYTES of stacked adaptors.
"""
from __future__ import annotations

from pathlib import Path

import torch

from robustedit.rep import RepEditBatch
from robustedit.seeding import torch_generator
from robustedit.pipeline.stage import stage_app, stage_file
from robustedit.pipeline.evaluate import evaluate_split

# Adaptor bytes stacked per evaluated chunk of cases. The adaptors file is memory-mapped and only one
# chunk is copied out (stacked) at a time: 4 GiB holds 83 LLaMA-2-7B adaptors (51 MB each, so 5 chunks
# for 400 cases) or 50 Mistral-7B ones (86 MB), where stacking all 400 took 20 / 34 GB beside the loaded
# copies. A small model's split is one chunk (SmolLM2: 1.3 MB per case), evaluated exactly as before.
ADAPTOR_CHUNK_BYTES = 4 * 2 ** 30


def adaptor_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state["params"].values())


def chunk_cases_for(states: list[dict], budget: int = ADAPTOR_CHUNK_BYTES) -> int | None:
    """Cases per chunk whose stacked adaptors fit in `budget` bytes (at least 1); None without states."""
    return max(1, budget // adaptor_bytes(states[0])) if states else None


def rep_edit_batch_fn(cfg: dict, adaptors_path: Path):
    """(edit_batch_fn for evaluate_split, cases per chunk) for the adaptors file at `adaptors_path`."""
    saved = torch.load(adaptors_path, mmap=True, weights_only=True)  # tensors stay in the file until stacked
    split = cfg["job"]["split"]
    generator: list = []  # one seeded dropout stream shared by all chunks (created on first use)

    def make(lm, edits, device, part: range):
        if len(saved["states"]) != len(edits):
            raise ValueError(f"{adaptors_path}: {len(saved['states'])} adaptors for {len(edits)} edits (rerun rep)")
        # dropout at test time only with rep.adaptor.eval_dropout (the reference's quirk); seeded then
        if cfg["rep"]["adaptor"]["eval_dropout"] and not generator:
            generator.append(torch_generator(cfg["seed"], "rep_eval_dropout", split, device=device))
        return RepEditBatch(lm.model, lm.arch, saved["layer"], edits[part.start: part.stop],
                            saved["states"][part.start: part.stop], device,
                            threshold=cfg["rep"]["gate_threshold"], generator=generator[0] if generator else None)

    return make, chunk_cases_for(saved["states"])


@stage_app("eval_rep")
def main(cfg: dict, out_dir: Path) -> None:
    name = cfg["rep"]["name"]
    method = "ROME+REP" if name == "default" else f"ROME+REP ({name})"
    make, chunk_cases = rep_edit_batch_fn(cfg, stage_file(cfg, "rep", "adaptors"))
    evaluate_split(cfg, stage_file(cfg, "rome", "edits"), out_dir, method, edit_batch_fn=make,
                   pre_from=stage_file(cfg, "eval_rome", "results"), include_unedited=False,
                   chunk_cases=chunk_cases)


if __name__ == "__main__":
    main()
