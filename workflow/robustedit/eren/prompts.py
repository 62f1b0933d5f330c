"""EREN's prompt templates (thunlp/EREN src/model/utils.py), reproduced verbatim.

QA (CounterFact-Hard):
- step 1 / EREN:    'Read this and answer the question. If the question is unanswerable,
                    say "unanswerable".\\n\\n{context}\\n\\n{question}' (one line)
- one-step MRC:     'Read this and answer the question.\\n\\n{context}\\n\\n{question}'
- closed book:      'Please answer this question: {question}'
NLI (FEVER):
- with notes:       '{context}\\n\\nCan we conclude that "{hypothesis}"?\\n\\n{options}'
  options = "OPTIONS:\\n- Yes\\n- It's impossible to say\\n- No" (EREN) or "OPTIONS:\\n- Yes\\n- No" (one-step)
- closed book:      'Is it true that {statement}?\\n\\nOPTIONS:\\n- yes\\n- no'
  EREN's unedited FEVER baseline (`gen_texts_bool_qa`); the claim loses its final character there,
  here only a trailing "." is removed.
"""
from __future__ import annotations

from typing import Sequence

QA_TWO_STEP = ('Read this and answer the question. If the question is unanswerable, say "unanswerable".'
               "\n\n{context}\n\n{question}")
QA_ONE_STEP = "Read this and answer the question.\n\n{context}\n\n{question}"
QA_CLOSED_BOOK = "Please answer this question: {question}"
NLI_WITH_CONTEXT = '{context}\n\nCan we conclude that "{hypothesis}"?\n\n{options}'
NLI_CLOSED_BOOK = "Is it true that {statement}?\n\n{options}"

NLI_OPTIONS_TWO_STEP = ("Yes", "It's impossible to say", "No")
NLI_OPTIONS_ONE_STEP = ("Yes", "No")
NLI_OPTIONS_CLOSED_BOOK = ("yes", "no")


def make_context(notes: Sequence[str]) -> str:
    """EREN's context: notes joined by '.\\n' with a final '.' (notes are stored without one)."""
    return ".\n".join(notes) + "."


def options_block(options: Sequence[str]) -> str:
    return "OPTIONS:\n- " + "\n- ".join(options)


def qa_prompt(context: str, question: str, two_step: bool) -> str:
    return (QA_TWO_STEP if two_step else QA_ONE_STEP).format(context=context, question=question)


def qa_closed_book_prompt(question: str) -> str:
    return QA_CLOSED_BOOK.format(question=question)


def nli_prompt(context: str, hypothesis: str, two_step: bool) -> str:
    options = NLI_OPTIONS_TWO_STEP if two_step else NLI_OPTIONS_ONE_STEP
    return NLI_WITH_CONTEXT.format(context=context, hypothesis=hypothesis, options=options_block(options))


def nli_closed_book_prompt(claim: str) -> str:
    claim = claim.rstrip()
    statement = claim[:-1] if claim.endswith(".") else claim
    return NLI_CLOSED_BOOK.format(statement=statement, options=options_block(NLI_OPTIONS_CLOSED_BOOK))
