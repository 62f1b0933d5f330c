"""Forward hooks as context managers (in the spirit of baukit's nethook, without globals).

    with capture_input(down_proj) as cap:   # cap.value = the module's first positional input
        model(**batch)
    with stop_after(down_proj):             # abort the forward once `down_proj` ran
        run_until(model, batch)
    with edit_input(down_proj, fn):         # replace the input by fn(input)
    with edit_output(mlp, fn):              # replace the output by fn(output)
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn


class StopForward(Exception):
    """Raised by `stop_after` to end a forward pass early; caught by `run_until`."""


class Captured:
    value: torch.Tensor | None = None


@contextlib.contextmanager
def capture_input(module: nn.Module, detach: bool = True) -> Iterator[Captured]:
    cap = Captured()

    def hook(_mod, args):
        cap.value = args[0].detach() if detach else args[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


@contextlib.contextmanager
def capture_output(module: nn.Module, detach: bool = True) -> Iterator[Captured]:
    cap = Captured()

    def hook(_mod, _args, out):
        out = out[0] if isinstance(out, tuple) else out
        cap.value = out.detach() if detach else out

    handle = module.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


@contextlib.contextmanager
def edit_input(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    def hook(_mod, args):
        return (fn(args[0]),) + tuple(args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def edit_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    def hook(_mod, _args, out):
        if isinstance(out, tuple):
            return (fn(out[0]),) + tuple(out[1:])
        return fn(out)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    def hook(_mod, _args, _out):
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_until(model: nn.Module, **inputs) -> None:
    """Run `model(**inputs)`, swallowing the StopForward of a `stop_after` hook."""
    try:
        model(**inputs)
    except StopForward:
        pass
