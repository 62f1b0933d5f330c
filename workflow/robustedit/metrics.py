"""Named, versioned editing metrics: teacher-forced ones from token scores with explicit masks, and
generation ones from a greedy continuation (evaluate/generation.py).

The three "success" conventions of the literature are kept apart and labelled (they are not comparable):

    exact_match@1        REP paper: an item succeeds iff ALL target tokens are the teacher-forced argmax
    token_mean_acc@1     EasyEdit: the mean over target tokens of [argmax == target]
    prob_compare@1       ROME/CounterFact: P(target) > P(alternative), P = exp(-mean token NLL)
    locality_agreement@1 REP/EasyEdit locality: mean over target tokens of [argmax == unedited argmax]

Generation protocol (each metric's `protocol` is "generation"; the others' is "teacher_forced"):

    generation_match@1     the normalised target's words are the first words of the normalised continuation
    generation_span@1      ... or occur as a whole-word span anywhere in it
    generation_unchanged@1 the continuation's token ids equal the unedited model's continuation

Normalisation is robustedit.answer_text.normalize_answer (SQuAD's, also EREN's). A target that
normalises to nothing (e.g. "The") never matches.

Every teacher-forced metric maps N items to N values in [0, 1]. Aggregations turn per-case lists of item values into
one percentage: `micro` (Σ values / Σ items × 100, the REP paper's tables) and `case_mean` (mean over
cases of the per-case mean × 100, EasyEdit's and ROME's summaries). A metric's key is `name@version`;
a change of definition gets a new version, never a silent redefinition.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .answer_text import contains_span, normalize_answer
from .errors import ConfigError


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced scores of N items padded to T target tokens (padding where mask is False)."""

    target_ids: torch.Tensor  # [N, T] long: the tokens the model should produce
    argmax_ids: torch.Tensor  # [N, T] long: the model's argmax at the position predicting each token
    logprobs: torch.Tensor  # [N, T] float: log p(target token | teacher-forced prefix)
    mask: torch.Tensor  # [N, T] bool: True on real target tokens

    def __post_init__(self):
        shape = self.mask.shape
        for name in ("target_ids", "argmax_ids", "logprobs"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"TokenScores.{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"mask has {tuple(shape)}")
        if self.mask.dtype != torch.bool:
            raise ValueError("TokenScores.mask must be a bool tensor")
        if shape[0] and not bool(self.mask.any(dim=1).all()):
            raise ValueError("every item needs at least one target token (a mask row is all False)")

    @classmethod
    def from_logits(cls, logits: torch.Tensor, target_ids: torch.Tensor, mask: torch.Tensor) -> "TokenScores":
        """logits [N, T, V] at the positions predicting target_ids [N, T]."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        safe = torch.where(mask, target_ids, torch.zeros_like(target_ids))  # padded ids may be anything
        token_logp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        return cls(target_ids, logits.argmax(-1), token_logp.masked_fill(~mask, 0.0), mask)

    @classmethod
    def from_lists(cls, target_ids: Sequence[Sequence[int]], argmax_ids: Sequence[Sequence[int]],
                   logprobs: Sequence[Sequence[float]]) -> "TokenScores":
        """Pad ragged per-item lists (what evaluation stores) into tensors."""
        n = len(target_ids)
        if not (len(argmax_ids) == len(logprobs) == n):
            raise ValueError("target_ids, argmax_ids and logprobs must have one entry per item")
        width = max((len(t) for t in target_ids), default=0)
        tgt = torch.zeros(n, width, dtype=torch.long)
        arg = torch.zeros(n, width, dtype=torch.long)
        lp = torch.zeros(n, width, dtype=torch.float64)
        mask = torch.zeros(n, width, dtype=torch.bool)
        for i, (t, a, p) in enumerate(zip(target_ids, argmax_ids, logprobs)):
            if not (len(t) == len(a) == len(p)):
                raise ValueError(f"item {i}: {len(t)} target ids, {len(a)} argmax ids, {len(p)} log-probs")
            k = len(t)
            tgt[i, :k] = torch.as_tensor(list(t), dtype=torch.long)
            arg[i, :k] = torch.as_tensor(list(a), dtype=torch.long)
            lp[i, :k] = torch.as_tensor(list(p), dtype=torch.float64)
            mask[i, :k] = True
        return cls(tgt, arg, lp, mask)

    def n_tokens(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def mean_logprob(self) -> torch.Tensor:
        """-(mean token NLL) per item; exp of it is ROME's P."""
        return (self.logprobs * self.mask).sum(dim=1) / self.n_tokens()


def _masked_mean(hits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (hits & mask).sum(dim=1).double() / mask.sum(dim=1).double()


def exact_match(scores: TokenScores, **_) -> torch.Tensor:
    correct = (scores.argmax_ids == scores.target_ids) | ~scores.mask  # padding never fails an item
    return correct.all(dim=1).double()


def token_mean_acc(scores: TokenScores, **_) -> torch.Tensor:
    return _masked_mean(scores.argmax_ids == scores.target_ids, scores.mask)


def prob_compare(scores: TokenScores, *, alternative: TokenScores, **_) -> torch.Tensor:
    """1 where the item's target is more probable than its alternative (ties fail, as `nll_true > nll_new`)."""
    if alternative.mask.shape[0] != scores.mask.shape[0]:
        raise ValueError("prob_compare needs one alternative per item")
    return (scores.mean_logprob() > alternative.mean_logprob()).double()


def locality_agreement(scores: TokenScores, *, reference_argmax: torch.Tensor, **_) -> torch.Tensor:
    """reference_argmax [N, T]: the unedited model's argmax on the same teacher-forced items."""
    if reference_argmax.shape != scores.mask.shape:
        raise ValueError(f"reference_argmax has shape {tuple(reference_argmax.shape)}, "
                         f"scores have {tuple(scores.mask.shape)}")
    return _masked_mean(scores.argmax_ids == reference_argmax, scores.mask)


@dataclass(frozen=True)
class Metric:
    name: str
    version: int
    description: str
    fn: Callable[..., torch.Tensor]
    needs: frozenset[str] = field(default_factory=frozenset)  # extra inputs: "alternative", "reference_argmax"
    protocol = "teacher_forced"

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def __call__(self, scores: TokenScores, *, alternative: TokenScores | None = None,
                 reference_argmax: torch.Tensor | None = None) -> torch.Tensor:
        given = {"alternative": alternative, "reference_argmax": reference_argmax}
        missing = [k for k in sorted(self.needs) if given[k] is None]
        if missing:
            raise ValueError(f"metric {self.key} needs {missing}")
        return self.fn(scores, **{k: v for k, v in given.items() if k in self.needs})


@dataclass(frozen=True)
class Continuation:
    """What greedy generation produced after a prompt: the new token ids and their decoded text."""
    ids: tuple[int, ...]
    text: str


def _words(text: str) -> list[str]:
    return normalize_answer(text).split()


def generation_match(gen: Continuation, *, target: str, **_) -> float:
    want = _words(target)
    return float(bool(want) and _words(gen.text)[:len(want)] == want)


def generation_span(gen: Continuation, *, target: str, **_) -> float:
    want = _words(target)
    return float(bool(want) and contains_span(_words(gen.text), want))


def generation_unchanged(gen: Continuation, *, reference: Continuation, **_) -> float:
    return float(tuple(gen.ids) == tuple(reference.ids))


@dataclass(frozen=True)
class GenerationMetric:
    name: str
    version: int
    description: str
    fn: Callable[..., float]
    protocol = "generation"

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def __call__(self, gen: Continuation, *, target: str, reference: Continuation) -> float:
        return self.fn(gen, target=target, reference=reference)


METRICS: dict[str, Metric | GenerationMetric] = {}


def metrics_of(protocol: str) -> dict[str, Metric | GenerationMetric]:
    """The registered metrics of one protocol ("teacher_forced" or "generation"), by key."""
    return {k: m for k, m in METRICS.items() if m.protocol == protocol}


def register(metric: Metric | GenerationMetric) -> Metric | GenerationMetric:
    if metric.key in METRICS:
        raise ConfigError(f"metric {metric.key} is already registered")
    METRICS[metric.key] = metric
    return metric


register(Metric("exact_match", 1, "REP: all target tokens equal the teacher-forced argmax", exact_match))
register(Metric("token_mean_acc", 1, "EasyEdit: mean per-token teacher-forced argmax accuracy", token_mean_acc))
register(Metric("prob_compare", 1, "ROME: P(target) > P(alternative), P = exp(-mean token NLL)", prob_compare,
                frozenset({"alternative"})))
register(Metric("locality_agreement", 1, "mean over target tokens of [argmax == unedited model's argmax]",
                locality_agreement, frozenset({"reference_argmax"})))
register(GenerationMetric("generation_match", 1, "the normalised target begins the greedy continuation",
                          generation_match))
register(GenerationMetric("generation_span", 1, "the normalised target is a whole-word span of the continuation",
                          generation_span))
register(GenerationMetric("generation_unchanged", 1, "the continuation's tokens equal the unedited model's",
                          generation_unchanged))


def get_metric(name: str) -> Metric:
    """'name@version', or a bare name when exactly one version of it is registered."""
    if name in METRICS:
        return METRICS[name]
    versions = [m for m in METRICS.values() if m.name == name]
    if len(versions) == 1:
        return versions[0]
    if versions:
        raise ConfigError(f"metric {name!r} is ambiguous; name a version: {sorted(m.key for m in versions)}")
    raise ConfigError(f"unknown metric {name!r}; known: {sorted(METRICS)}")


def micro(per_case: Sequence[Sequence[float]]) -> float | None:
    """Σ item values / Σ items × 100 over all items of all cases (REP); None without items."""
    values = [float(v) for case in per_case for v in case]
    return 100.0 * sum(values) / len(values) if values else None


def case_mean(per_case: Sequence[Sequence[float]]) -> float | None:
    """Mean over cases of each case's item mean × 100; cases without items are skipped; None if none."""
    means = [sum(map(float, case)) / len(case) for case in per_case if len(case)]
    return 100.0 * sum(means) / len(means) if means else None


AGGREGATIONS: dict[str, Callable[[Sequence[Sequence[float]]], float | None]] = {
    "micro": micro,
    "case_mean": case_mean,
}


def aggregate(per_case: Sequence[Sequence[float]], aggregation: str) -> float | None:
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {aggregation!r}; use one of {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[aggregation](per_case)
