"""Every random choice gets its own generator, derived from the root seed and a purpose string,
so adding a random step elsewhere never shifts another step's draws."""
from __future__ import annotations

import hashlib
import random

import torch


def derive_seed(seed: int, *purpose: object) -> int:
    key = ":".join([str(int(seed))] + [str(p) for p in purpose]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


def py_rng(seed: int, *purpose: object) -> random.Random:
    return random.Random(derive_seed(seed, *purpose))


def torch_generator(seed: int, *purpose: object, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *purpose))
    return gen
