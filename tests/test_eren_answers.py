"""Answer normalisation (SQuAD-style), whole-word span matching, FEVER labels and abstention tests."""
from __future__ import annotations

import pytest

from robustedit.eren.answers import (answer_matches, fever_label, is_impossible_to_say, is_unanswerable,
                                     normalize_answer, same_output)


@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  A  cat, an apple and THE dog. ", "cat apple and dog"),
    ("It's impossible to say", "its impossible to say"),
    ("Theatre", "theatre"),  # "the" only as a whole word
    ("Bois-le-Roi", "boisleroi"),  # punctuation removed, as SQuAD
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("pred, golds, ok", [
    ("English", "English", True),
    ("The answer is English.", "English", True),
    ("Danielle Darrieux's mother tongue is English", ["French", "English"], True),
    ("It was developed by BMW and Toyota", "BMW", True),
    ("Parisian", "Paris", False),  # substring of a word is not a whole-word span
    ("Paris, France", "Paris France", True),
    ("New York City", "York New", False),  # order matters
    ("the", "The", False),  # empty after normalisation never matches
    ("anything at all", ["the", "a"], False),
    ("French", "English", False),
])
def test_answer_matches(pred, golds, ok):
    assert answer_matches(pred, golds) is ok


@pytest.mark.parametrize("out, label", [
    ("Yes", "yes"), ("yes.", "yes"), ("Yes, it is true", "yes"), ("True", "yes"),
    ("No", "no"), ("no!", "no"), ("False", "no"),
    ("It's impossible to say", "unknown"), ("", "unknown"), ("Nope", "unknown"), ("Noah", "unknown"),
])
def test_fever_label(out, label):
    assert fever_label(out) == label


def test_abstention_tests_are_exact():
    assert is_unanswerable("unanswerable")
    assert is_unanswerable("  Unanswerable. ")
    assert is_unanswerable("UNANSWERABLE!\n")
    assert not is_unanswerable("The question is unanswerable.")
    assert not is_unanswerable("unanswerable question")
    assert is_impossible_to_say("It's impossible to say.")
    assert is_impossible_to_say("it’s impossible to say")
    assert not is_impossible_to_say("Yes")


def test_same_output_compares_normalised_text():
    assert same_output("Paris.", "paris")
    assert same_output("The Beatles", "beatles")
    assert not same_output("Paris", "Paris, France")
