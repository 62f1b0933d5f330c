"""Nothing REP trains on is a held-out sequence the evaluation scores for that case, in every REP setting.

The reference check below is written from the definition (token lists compared item by item, no sets, no
shared code with evaluate.leakage): a training sequence leaks when it equals a held-out scored sequence,
begins one, or is begun by one. Held-out = every group but the in-domain ones (success, rephrase_id,
shuffle_id, long_id), which score the pool's own variants by design.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from robustedit.errors import ConfigError
from robustedit.evaluate import build_items
from robustedit.evaluate.leakage import HELD_OUT_GROUPS, LeakGuard, held_out_sequences, leak_guard
from robustedit.manifest import DataStore
from robustedit.pipeline.config import compose
from robustedit.pipeline.wikitext import context_words, snippets
from robustedit.rep import fit_rep_adaptor, training_texts
from test_evaluate import make_case

import rep as rep_script  # noqa: E402  (scripts/ is on the test path)

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = sorted(p.stem for p in (ROOT / "conf" / "rep").glob("*.yaml"))
TEMPLATES = ["{}", "The following is true. {}", "In short, {}"]


def scored_reference(tok, case) -> list[list[int]]:
    out = []
    for item in build_items(case):
        if item.group not in ("success", "rephrase_id", "shuffle_id", "long_id"):
            prompt = list(tok(item.prompt)["input_ids"])
            full = list(tok(item.prompt + " " + item.target)["input_ids"])
            out.append(prompt + full[len(prompt):])  # prompt ids + target ids, as the evaluation scores them
    return out


def leaks_reference(seq: list[int], scored: list[list[int]]) -> bool:
    for s in scored:
        n = min(len(seq), len(s))
        if seq[:n] == s[:n]:  # one begins the other (or they are equal)
            return True
    return False


def cases_with_collisions():
    """Real-shaped cases, plus one whose in-domain shuffle equals an out-of-domain rephrase and one whose
    neighbourhood prompt is also a template-wrapped variant's text."""
    a = make_case(0)
    b = make_case(1, "Toko Yasuda", "{}, a native speaker of", "Russian", "Japanese", n_held=2)
    c = make_case(2)
    c["shuffled_subjects"] = {"id": [c["subject_rephrases"]["ood"][0]], "ood": []}
    return [a, b, c]


def test_guard_semantics():
    guard = LeakGuard([[1, 5, 6, 7, 8]])
    assert guard.leaks([1, 5, 6, 7, 8])  # equal
    assert guard.leaks([1, 5, 6])  # a prefix: its keys are the scored sequence's first keys
    assert guard.leaks([1, 5, 6, 7, 8, 9])  # begun by the scored sequence: all its keys are trained on
    assert not guard.leaks([1, 5, 9, 7, 8])  # a shared head (BOS 5) is not a leak
    assert not guard.leaks([1])  # BOS alone is in every sequence
    assert not LeakGuard([]).leaks([1, 2, 3])


def test_held_out_sequences_match_the_evaluation(llama_tok):
    case = make_case(0)
    got = held_out_sequences(llama_tok, case)
    assert [list(s) for s in got] == scored_reference(llama_tok, case)
    n_items = sum(it.group in HELD_OUT_GROUPS for it in build_items(case))
    assert len(got) == n_items and n_items >= len(case["neighborhood_prompts"])


@pytest.mark.parametrize("setting", SETTINGS)
def test_no_setting_trains_on_a_scored_sequence(setting, llama_tok):
    cfg = compose([f"rep={setting}"])
    _, tcfg = rep_script.rep_configs(cfg["rep"])
    words = context_words(DataStore(cfg["paths"]["data"]), cfg["data"]["long_context"])
    for case in cases_with_collisions():
        rng = random.Random(case["case_id"])
        negatives = snippets(words, tcfg.gate_negative_snippets, tcfg.gate_negative_words, rng)
        original, kept, n_out, used_negatives = training_texts(llama_tok, case, TEMPLATES, tcfg,
                                                               leak_guard(llama_tok, case), negatives)
        scored = scored_reference(llama_tok, case)
        for text in [it.text for it in kept] + used_negatives:
            assert not leaks_reference(list(llama_tok(text)["input_ids"]), scored), (setting, case["case_id"], text)
        ood = set(case["subject_rephrases"]["ood"]) | set(case["shuffled_subjects"]["ood"])
        assert not any(it.variant in ood for it in kept)  # no out-of-domain variant, in any template
        # the neighbourhood prompts (Locality's items) are never negatives, whatever the setting
        assert not set(case["neighborhood_prompts"]) & set(used_negatives)
        if case["case_id"] == 2:  # the colliding shuffle is left out of the pool, and counted
            assert n_out == len(TEMPLATES) and all(it.variant != case["shuffled_subjects"]["id"][0] for it in kept)
        else:
            assert n_out == 0
        assert len(used_negatives) == (tcfg.gate_negative_snippets if tcfg.gate_loss_weight > 0 else 0)


def test_default_setting_has_gate_negatives_and_no_k_star_positive():
    _, tcfg = rep_script.rep_configs(compose([])["rep"])
    assert tcfg.gate_loss_weight > 0 and tcfg.gate_negative_snippets > 0 and not tcfg.gate_original_positive


def test_the_old_negatives_are_refused(llama_tok, tiny_llama_model):
    """The neighbourhood prompts were the gate's negatives; the Locality column scores exactly them."""
    case = make_case(0)
    _, tcfg = rep_script.rep_configs(compose([])["rep"])
    dp = tiny_llama_model.model.layers[1].mlp.down_proj
    import torch
    u = torch.ones(dp.in_features) / dp.in_features ** 0.5
    with pytest.raises(ConfigError, match="case_id 0: gate negative"):
        fit_rep_adaptor(tiny_llama_model, llama_tok, dp, case, TEMPLATES, u, leaks=leak_guard(llama_tok, case),
                        tcfg=tcfg, seed=0, negative_texts=case["neighborhood_prompts"][:1])
