"""REP key diagnostics (robustedit.analysis.transfer) on the tiny random Llama.

The reference is plain: one forward per item with a pre-hook on down_proj, the key at
tokens.subject_last_index, the adaptor written out by hand, r = uᵀa / uᵀk* computed directly.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustedit.analysis.transfer import (join_outcomes, plot_transfer, subject_items, summarise_transfer,
                                          transfer_records)
from robustedit.errors import RecordError
from robustedit.evaluate.items import build_items
from robustedit.rep import AdaptorConfig, adaptor_state, init_params
from robustedit.tokens import subject_last_index
from test_evaluate import make_case

LAYER = 1
CFG = AdaptorConfig(dropout=0.0)
THRESHOLD = 0.5


def down_proj(model):
    return model.model.layers[LAYER].mlp.down_proj


def random_state(d: int, seed: int = 0) -> dict:
    """An adaptor with nonzero B (it moves keys) and a spread gate (open on some keys, shut on others)."""
    g = torch.Generator().manual_seed(seed)
    p = init_params(d, CFG, g)
    p["lora_B"] = torch.randn(d, CFG.rank, generator=g) * 0.2
    p["gate_w2"] = p["gate_w2"] * 20
    return adaptor_state(p, CFG)


def case_with_skips():
    case = make_case()
    case["patil_prompts"].append("What language does the French actress speak natively?")  # no subject
    return case


def reference_key(model, tok, text: str, subject: str) -> torch.Tensor:
    """One forward of `text` alone; the down_proj input at the first occurrence's last token."""
    ids = torch.tensor([tok(text)["input_ids"]])
    got = {}
    handle = down_proj(model).register_forward_pre_hook(lambda m, args: got.setdefault("x", args[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    return got["x"][0, subject_last_index(tok, text, subject)].double()


def reference_adapt(params: dict, a: torch.Tensor, threshold: float) -> tuple[torch.Tensor, float]:
    p = {k: v.double() for k, v in params.items()}
    g = torch.sigmoid(p["gate_w2"] @ F.gelu(p["gate_w1"] @ a + p["gate_b1"]) + p["gate_b2"])[0]
    delta = p["lora_B"] @ (p["lora_A"] @ a) * (CFG.alpha / CFG.rank)
    return a + delta * float(g > threshold), float(g)


def subject_of(case: dict, group: str, index: int) -> str:
    if group.startswith("rephrase"):
        return case["subject_rephrases"][group.split("_")[1]][index]
    if group.startswith("shuffle"):
        return case["shuffled_subjects"][group.split("_")[1]][index]
    return case["subject"]


def test_item_order_spans_and_skips():
    case = case_with_skips()
    case["long_context"]["held"][0] = f"{case['subject']} was mentioned in this passage first."
    items, skipped = subject_items(case)
    built = [(it.group, it.prompt) for it in build_items(case)]
    positions = [built.index((it.group, it.text)) for it in items]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)  # build_items order
    assert {it.group for it in items} == {g for g, _ in built} - {"locality"}
    assert skipped == {"paraphrase": 0, "patil": 1}
    targets = [it.target for it in build_items(case)]
    for it in items:
        assert it.text == built[positions[items.index(it)]][1]
        assert it.target == targets[positions[items.index(it)]]  # the scored item's own target
        assert it.text[slice(*it.span)] == subject_of(case, it.group, it.index)
    long0 = next(it for it in items if it.group == "long_id" and it.index == 0)
    passage = case["long_context"]["held"][0]
    assert long0.span[0] == len(passage) + 1 + case["prompt"].find(case["subject"])  # not the passage's mention


def test_records_equal_the_reference(llama_tok, tiny_llama_model):
    model, tok = tiny_llama_model, llama_tok
    case = case_with_skips()
    d = down_proj(model).in_features
    u = torch.randn(d, generator=torch.Generator().manual_seed(1))
    u = u / u.norm()
    state = random_state(d)
    gates = sorted(r["gate"] for r in transfer_records(model, tok, down_proj(model), case, u, state, THRESHOLD,
                                                       "cpu")[0])
    threshold = (gates[len(gates) // 2 - 1] + gates[len(gates) // 2]) / 2  # half the gates open, half shut
    records, skipped = transfer_records(model, tok, down_proj(model), case, u, state, threshold, "cpu", batch_rows=4)
    assert skipped == {"paraphrase": 0, "patil": 1}
    assert records[0]["group"] == "success" and records[0]["r_before"] == 1.0
    items, _ = subject_items(case)
    assert [(r["group"], r["index"], r["prompt"]) for r in records] == [(i.group, i.index, i.text) for i in items]
    k_star = reference_key(model, tok, case["prompt"], case["subject"])
    ud = u.double()
    opened = 0
    for rec in records:
        a = reference_key(model, tok, rec["prompt"], subject_of(case, rec["group"], rec["index"]))
        a2, g = reference_adapt(state["params"], a, threshold)
        want = {"r_before": float(a @ ud / (k_star @ ud)), "r_after": float(a2 @ ud / (k_star @ ud)), "gate": g,
                "cos_before": float(F.cosine_similarity(a, k_star, dim=0)),
                "cos_after": float(F.cosine_similarity(a2, k_star, dim=0))}
        for col, value in want.items():
            assert rec[col] == pytest.approx(value, abs=1e-5, rel=1e-5), (rec["group"], rec["index"], col)
        assert rec["gate_open"] == (g > threshold)
        opened += rec["gate_open"]
    assert 0 < opened < len(records)  # the comparison covers open and shut gates
    assert any(abs(r["r_after"] - r["r_before"]) > 1e-3 for r in records)  # the adaptor moves some keys


def test_no_adaptor_leaves_keys_unchanged(llama_tok, tiny_llama_model):
    model = tiny_llama_model
    d = down_proj(model).in_features
    u = torch.randn(d, generator=torch.Generator().manual_seed(2))
    records, _ = transfer_records(model, llama_tok, down_proj(model), make_case(1, "Toko Yasuda", "{}, a native of"),
                                  u / u.norm(), None, THRESHOLD, "cpu", long_id_passages=1)
    assert sum(r["group"] == "long_id" for r in records) == 1
    for r in records:
        assert r["r_after"] == r["r_before"] and r["cos_after"] == r["cos_before"] and r["gate"] is None
    with pytest.raises(RecordError, match="u has shape"):
        transfer_records(model, llama_tok, down_proj(model), make_case(), u[:-1], None, THRESHOLD, "cpu")


def results(case_id: int, items: list[tuple[str, str, float]]) -> dict:
    return {"case_id": case_id, "items": [{"group": g, "prompt": p, "exact_match@1": em} for g, p, em in items]}


def test_join_matches_by_group_position_and_checks_prompts():
    recs = [{"case_id": 0, "group": "success", "index": 0, "prompt": "s", "r_before": 1.0},
            {"case_id": 0, "group": "rephrase_id", "index": 1, "prompt": "b", "r_before": 0.2}]
    rome = [results(0, [("success", "s", 1.0), ("locality", "l", 1.0), ("rephrase_id", "a", 1.0),
                        ("rephrase_id", "b", 0.0)])]
    rep = [results(0, [("success", "s", 1.0), ("locality", "l", 0.0), ("rephrase_id", "a", 1.0),
                       ("rephrase_id", "b", 1.0)])]
    rows = join_outcomes(recs, rome, rep)
    assert [(r["rome_em"], r["rep_em"], r["rome_outcome"], r["rome_case_success"]) for r in rows] == \
        [(1.0, 1.0, "success", 1.0), (0.0, 1.0, "failure", 1.0)]
    rep[0]["items"][3]["prompt"] = "other"
    with pytest.raises(RecordError, match="eval_rep results have no item"):
        join_outcomes(recs, rome, rep)


def test_summary_per_group_and_outcome(tmp_path):
    def row(group, outcome, rb, ra, gate_open, rep_em):
        return {"group": group, "rome_outcome": outcome, "r_before": rb, "r_after": ra, "gate_open": gate_open,
                "rome_em": 1.0 if outcome == "success" else 0.0, "rep_em": rep_em}

    rows = [row("shuffle_ood", "failure", 0.1, 0.1, False, 0.0), row("rephrase_id", "failure", 0.0, 0.5, True, 1.0),
            row("rephrase_id", "failure", 0.2, 0.9, True, 1.0), row("rephrase_id", "failure", 0.4, 0.4, False, 0.0),
            row("rephrase_id", "success", 0.9, 1.0, True, 1.0), row("success", "success", 1.0, 1.0, None, 1.0)]
    out = summarise_transfer(rows)
    assert [(s["group"], s["rome_outcome"], s["n"]) for s in out] == [
        ("success", "success", 1), ("rephrase_id", "success", 1), ("rephrase_id", "failure", 3),
        ("shuffle_ood", "failure", 1)]
    fail = out[2]
    assert fail["domain"] == "id" and out[3]["domain"] == "ood" and out[0]["domain"] == ""
    assert (fail["r_before_q25"], fail["r_before_median"], fail["r_before_q75"]) == pytest.approx((0.1, 0.2, 0.3))
    assert fail["r_after_median"] == pytest.approx(0.5)
    assert fail["gate_open_frac"] == pytest.approx(2 / 3) and fail["rep_success"] == pytest.approx(2 / 3)
    assert fail["rome_success"] == 0.0 and out[0]["gate_open_frac"] is None
    assert not any(math.isnan(v) for s in out for k, v in s.items() if k.startswith("r_"))
    plot_transfer(rows, tmp_path / "t.png", title="tiny")
    assert (tmp_path / "t.png").stat().st_size > 0
