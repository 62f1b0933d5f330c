"""EREN inference: retrieve notes, let the reader decide whether they answer the input, else fall back.

Methods:
- "eren" (two-step): step 1 asks the reader to answer from the top-k notes or say "unanswerable"
  (FEVER: choose "It's impossible to say"); such inputs get step 2, the closed-book prompt.
- "eren_score" (EREN+score, not the paper's): as "eren", but a query whose top note scores below
  `score_threshold` goes straight to step 2 (robustedit.eren.gate chooses the threshold on held-out data).
- "one_step": EREN's one-step MRC baseline; the reader must answer from the notes (FEVER: Yes/No only).
- "unedited": closed-book only; the notebook is not used.

Batching: all step-1 prompts go to the reader in one call (the reader splits them into batches),
then the step-2 prompts of the inputs judged unanswerable in a second call. Identical prompts are
generated once. Unlike EREN's batched `gen_texts`, which stores "unanswerable" as the final output,
step 2 is always run here. A query for which no note is retrieved (empty notebook) goes straight to
step 2 (EREN raises in that case).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from ..errors import ConfigError
from .answers import is_impossible_to_say, is_unanswerable
from .notebook import Notebook
from .prompts import make_context, nli_closed_book_prompt, nli_prompt, qa_closed_book_prompt, qa_prompt
from .reader import MAX_NEW_TOKENS, MAX_NEW_TOKENS_OPTIONS, Reader

TASKS = ("qa", "nli")
SCORE_GATED = "eren_score"  # EREN + a retrieval-score threshold (robustedit.eren.gate)
METHODS = ("eren", SCORE_GATED, "one_step", "unedited")
TWO_STEP = ("eren", SCORE_GATED)  # methods whose step 1 offers "unanswerable" and falls back on it
DEFAULT_K = 5  # EREN's num_context_examples


@dataclass
class Answer:
    query: str
    output: str  # the final answer
    step: int  # 1 = answered from the notes, 2 = closed-book fallback, 0 = closed-book method
    step1_output: str | None = None  # the reader's step-1 output (None if step 1 did not run)
    note_ids: list[int] = field(default_factory=list)  # retrieved notes, best first
    top_score: float | None = None  # the best note's retrieval score (None: nothing retrieved)

    def to_dict(self) -> dict:
        return asdict(self)


def _generate_unique(reader: Reader, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Generate each distinct prompt once, in first-seen order, and map outputs back."""
    unique = list(dict.fromkeys(prompts))
    if not unique:
        return []
    outs = reader.generate(unique, max_new_tokens=max_new_tokens)
    if len(outs) != len(unique):
        raise RuntimeError(f"reader returned {len(outs)} outputs for {len(unique)} prompts")
    table = dict(zip(unique, outs))
    return [table[p] for p in prompts]


class ErenEditor:
    """A notebook-backed editor. `task` is "qa" (free-text questions) or "nli" (FEVER claims)."""

    def __init__(self, reader: Reader, notebook: Notebook | None = None, task: str = "qa",
                 method: str = "eren", k: int = DEFAULT_K, score_threshold: float | None = None):
        if task not in TASKS:
            raise ConfigError(f"eren.task={task!r} is unknown; use one of {TASKS}")
        if method not in METHODS:
            raise ConfigError(f"eren.method={method!r} is unknown; use one of {METHODS}")
        if method != "unedited" and notebook is None:
            raise ConfigError(f"eren.method={method!r} needs a notebook")
        if k < 1:
            raise ConfigError(f"eren.k must be >= 1, got {k}")
        if (method == SCORE_GATED) != (score_threshold is not None):
            raise ConfigError(f"a score_threshold is given exactly for method {SCORE_GATED!r} "
                              f"(method {method!r}, score_threshold {score_threshold!r})")
        self.reader, self.notebook, self.task, self.method, self.k = reader, notebook, task, method, k
        self.score_threshold = score_threshold

    # ---- edits -------------------------------------------------------------------------------
    def edit(self, statements: Sequence[str]) -> None:
        """Add edit statements to the notebook (EREN applies all edits at once)."""
        if self.notebook is None:
            raise ConfigError("the unedited method has no notebook to edit")
        self.notebook.add(statements)

    # ---- prompts -----------------------------------------------------------------------------
    @property
    def step1_tokens(self) -> int:
        return MAX_NEW_TOKENS_OPTIONS if self.task == "nli" else MAX_NEW_TOKENS

    def closed_book_prompt(self, query: str) -> str:
        return nli_closed_book_prompt(query) if self.task == "nli" else qa_closed_book_prompt(query)

    def step1_prompt(self, query: str, notes: Sequence[str]) -> str:
        context = make_context(notes)
        two_step = self.method in TWO_STEP
        return nli_prompt(context, query, two_step) if self.task == "nli" else qa_prompt(context, query, two_step)

    def abstains(self, step1_output: str) -> bool:
        """Does the step-1 output say the notes do not answer the input?"""
        return is_impossible_to_say(step1_output) if self.task == "nli" else is_unanswerable(step1_output)

    # ---- inference ---------------------------------------------------------------------------
    def closed_book(self, queries: Sequence[str], known: Mapping[str, str] | None = None) -> list[str]:
        """Closed-book answers; `known` (query -> output, e.g. the unedited model's) is reused, not regenerated."""
        known = known or {}
        todo = [q for q in dict.fromkeys(queries) if q not in known]
        # NLI closed-book prompts list options, hence the shorter EREN budget.
        budget = MAX_NEW_TOKENS_OPTIONS if self.task == "nli" else MAX_NEW_TOKENS
        fresh = dict(zip(todo, _generate_unique(self.reader, [self.closed_book_prompt(q) for q in todo], budget)))
        return [known[q] if q in known else fresh[q] for q in queries]

    def answer(self, queries: Sequence[str], closed_book: Mapping[str, str] | None = None) -> list[Answer]:
        """Answer every query; `closed_book` optionally supplies already computed step-2 outputs."""
        queries = list(queries)
        if any(not isinstance(q, str) for q in queries):
            raise TypeError("queries must be strings")
        if self.method == "unedited":
            return [Answer(q, out, 0) for q, out in zip(queries, self.closed_book(queries, closed_book))]
        hits = self.notebook.search(queries, self.k)
        gate = self.score_threshold if self.method == SCORE_GATED else None
        with_notes = [i for i, h in enumerate(hits) if h and (gate is None or h[0].score >= gate)]
        prompts = [self.step1_prompt(queries[i], [x.note for x in hits[i]]) for i in with_notes]
        step1 = dict(zip(with_notes, _generate_unique(self.reader, prompts, self.step1_tokens)))
        fallback = [i for i in range(len(queries))
                    if i not in step1 or (self.method in TWO_STEP and self.abstains(step1[i]))]
        step2 = dict(zip(fallback, self.closed_book([queries[i] for i in fallback], closed_book)))
        return [Answer(q, step2[i] if i in step2 else step1[i], 2 if i in step2 else 1, step1.get(i),
                       [x.note_id for x in hits[i]], hits[i][0].score if hits[i] else None)
                for i, q in enumerate(queries)]
