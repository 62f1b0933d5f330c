"""Forward hooks as context managers (in the spirit of baukit's nethook, without globals).

    with capture_input(down_proj) as cap:          # cap.value = the module's first positional input
        model(**batch)
    with capture_output(mlp) as cap:               # cap.value = the module's output (first element of a tuple)
        model(**batch)
    with capture_input(down_proj) as cap, stop_after(down_proj):
        run_until(model, **batch)                  # the forward ends once down_proj ran
    with stop_before(lm_head) as cap:              # cap.value = lm_head's input; lm_head never runs
        run_until(model, **batch)
    with edit_input(down_proj, fn):                # down_proj sees fn(input)
    with edit_input(down_proj, fn, prepend=True):  # ... and fn runs before every other pre-hook on it
    with edit_output(mlp, fn):                     # the caller sees fn(output)

Every hook is removed when its context exits, also on an exception.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn


class StopForward(Exception):
    """Raised by `stop_after` / `stop_before` to end a forward pass early; caught by `run_until`."""


class Captured:
    value: torch.Tensor | None = None


@contextlib.contextmanager
def _registered(handle) -> Iterator[None]:
    try:
        yield
    finally:
        handle.remove()


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@contextlib.contextmanager
def capture_input(module: nn.Module, detach: bool = True) -> Iterator[Captured]:
    cap = Captured()

    def hook(_mod, args):
        cap.value = args[0].detach() if detach else args[0]

    with _registered(module.register_forward_pre_hook(hook)):
        yield cap


@contextlib.contextmanager
def capture_output(module: nn.Module, detach: bool = True) -> Iterator[Captured]:
    cap = Captured()

    def hook(_mod, _args, out):
        cap.value = _first(out).detach() if detach else _first(out)

    with _registered(module.register_forward_hook(hook)):
        yield cap


@contextlib.contextmanager
def edit_input(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], prepend: bool = False) -> Iterator[None]:
    """Replace the first positional input by fn(input); `prepend` runs this hook before the module's
    other forward pre-hooks (those registered earlier, and those of contexts entered later)."""
    def hook(_mod, args):
        return (fn(args[0]),) + tuple(args[1:])

    with _registered(module.register_forward_pre_hook(hook, prepend=prepend)):
        yield


@contextlib.contextmanager
def edit_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    def hook(_mod, _args, out):
        if isinstance(out, tuple):
            return (fn(out[0]),) + tuple(out[1:])
        return fn(out)

    with _registered(module.register_forward_hook(hook)):
        yield


@contextlib.contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    def hook(_mod, _args, _out):
        raise StopForward

    with _registered(module.register_forward_hook(hook)):
        yield


@contextlib.contextmanager
def stop_before(module: nn.Module) -> Iterator[Captured]:
    """Capture the module's first input (not detached) and end the forward before the module runs."""
    cap = Captured()

    def hook(_mod, args):
        cap.value = args[0]
        raise StopForward

    with _registered(module.register_forward_pre_hook(hook)):
        yield cap


def run_until(model: nn.Module, **inputs) -> None:
    """Run `model(**inputs)`, swallowing the StopForward of a `stop_after` / `stop_before` hook."""
    try:
        model(**inputs)
    except StopForward:
        pass
