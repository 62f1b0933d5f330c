"""The generation protocol's rules, shared by its two implementations: the stop rule, the new-token budget,
and the per-item record of a continuation.

generation.py decodes prompts on their own (left-padded batches, a forward over every prompt); decoding.py
continues the rows of a teacher-forced batch from its KV cache (evaluate_cases(..., generation=spec)).
Both apply the rule below, so they give the same continuations (tests/test_generation.py).

Stop rule (recorded in every result): a row ends at an end-of-sequence token (not kept), after
`len(target_ids) + spec.margin` new tokens, or once its decoded continuation contains one of
`spec.stop_strings`; the continuation is every token generated before that (the stop string kept,
so "St. Louis" survives a stop at ". ").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ..errors import ConfigError
from ..metrics import Continuation, metrics_of


@dataclass(frozen=True)
class GenerationSpec:
    margin: int = 4  # new tokens beyond the target's length: room for the span match and a sentence end
    stop_strings: tuple[str, ...] = ("\n", ". ")  # a line break or a sentence end stops a row

    def __post_init__(self):
        if self.margin < 0:
            raise ConfigError(f"generation margin must be >= 0, got {self.margin}")
        if any(not s for s in self.stop_strings):
            raise ConfigError("generation stop_strings must be non-empty strings")

    def recorded(self) -> dict:
        """The spec as every result records it (and as it reads back from JSON)."""
        return {**asdict(self), "stop_strings": list(self.stop_strings)}


def stop_rule(tok, spec: GenerationSpec) -> Callable[[list[int]], bool]:
    """Whether the new tokens so far contain a stop string (decoded without special tokens)."""
    def stopped(ids: list[int]) -> bool:
        text = tok.decode(ids, skip_special_tokens=True)
        return any(s in text for s in spec.stop_strings)
    return stopped


def continues(out: list[int], token: int, budget: int, eos: set[int], stopped: Callable[[list[int]], bool]) -> bool:
    """Append a greedy token to `out` under the stop rule; True while the row goes on generating."""
    if token in eos:
        return False
    out.append(token)
    return len(out) < budget and not stopped(out)


def cut(tokens: Sequence[int], budget: int, eos: set[int], stopped: Callable[[list[int]], bool]) -> list[int]:
    """The continuation that a row with this budget gets, read off a longer greedy run from the same prompt
    (greedy tokens do not depend on the budget, so a shorter budget's continuation is a prefix)."""
    out: list[int] = []
    for token in tokens:
        if not continues(out, token, budget, eos, stopped):
            break
    return out


def phase_fields(tok, ids: Sequence[int], target: str, reference_ids: Sequence[int]) -> dict:
    """An item's continuation (text, ids) and one value per generation metric, for one phase."""
    gen = Continuation(tuple(ids), tok.decode(list(ids), skip_special_tokens=True))
    ref = Continuation(tuple(reference_ids), tok.decode(list(reference_ids), skip_special_tokens=True))
    rec = {"continuation": gen.text, "continuation_ids": list(gen.ids)}
    rec.update({key: m(gen, target=target, reference=ref) for key, m in metrics_of("generation").items()})
    return rec


def pre_continuations(previous: Sequence[dict], case_ids: Sequence, pairs: Sequence[tuple[str, str]],
                      recorded: dict) -> list[list[int]]:
    """The unedited continuation ids of every item of an earlier run on the same cases (pre_from), checked
    to hold the same cases, the same (prompt, target) items in order and the same stop rule."""
    if [p["case_id"] for p in previous] != list(case_ids):
        raise ConfigError("pre_from holds other cases than the ones generated for")
    if any(p.get("generation") != recorded for p in previous):
        raise ConfigError(f"pre_from was generated with another stop rule than {recorded}")
    flat = [item for p in previous for item in p["items"]]
    if [(i["prompt"], i["target"]) for i in flat] != list(pairs):
        raise ConfigError("pre_from items differ from this run's (prompt, target) pairs")
    return [list(i["pre"]["continuation_ids"]) for i in flat]
