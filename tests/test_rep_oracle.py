"""The oracle ceilings of a key-side fix (robustedit.analysis.oracle) against a plain reference: the edit
written into W, one forward per item and oracle, the key at the subject's last token replaced by a hook
written from the definition; and the plain row against the evaluation's own scorer."""
from __future__ import annotations

import pytest
import torch

from robustedit.analysis.oracle import METHODS, oracle_records, replaced_keys, summarise_oracles
from robustedit.analysis.transfer import subject_items
from robustedit.edits import RankOneEdit, applied
from robustedit.evaluate.encoding import encode_item
from robustedit.evaluate.items import GROUPS
from robustedit.evaluate.scoring import score_batch
from robustedit.tokens import encode_with_span
from test_evaluate import arch_for, make_case
from test_rep_transfer import LAYER, down_proj, reference_key, subject_of


def edit_for(model, seed: int = 0, scale: float = 30.0) -> RankOneEdit:
    """A random rank-one edit large enough to flip some argmaxes."""
    lin = down_proj(model)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(lin.in_features, generator=g)
    return RankOneEdit(LAYER, u / u.norm(), torch.randn(lin.out_features, generator=g) * scale)


def reference_hit(model, tok, edit, prompt, target, position, new_key) -> tuple[float, float]:
    """Exact match and the target's summed log-probability of one item with the edit in W and the key at
    `position` set to new_key (None: kept)."""
    enc = encode_item(tok, prompt, target)

    def hook(_m, args):
        x = args[0].clone()
        if new_key is not None:
            x[0, position] = new_key.to(x.dtype)
        return (x,)

    handle = down_proj(model).register_forward_pre_hook(hook)
    try:
        with torch.no_grad(), applied(down_proj(model), edit):
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0]
    finally:
        handle.remove()
    pred = [int(logits[p].argmax()) for p in enc.read_positions()]
    logprob = sum(float(torch.log_softmax(logits[p].float(), -1)[t]) for p, t in zip(enc.read_positions(),
                                                                                    enc.target_ids))
    return float(pred == list(enc.target_ids)), logprob


def test_replaced_keys_math():
    g = torch.Generator().manual_seed(0)
    x, k, u = torch.randn(3, 5, 8, generator=g), torch.randn(8, generator=g), torch.randn(8, generator=g)
    out = replaced_keys(x, 2, k, u)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1, 2], k)
    assert float(u @ out[2, 2]) == pytest.approx(float(u @ k), rel=1e-5)
    shift = out[2, 2] - x[2, 2]  # along u only
    assert float(torch.linalg.norm(shift - (shift @ u) / (u @ u) * u)) < 1e-5
    for row in range(3):
        assert torch.equal(torch.cat([out[row, :2], out[row, 3:]]), torch.cat([x[row, :2], x[row, 3:]]))


def test_oracles_equal_the_reference(llama_tok, tiny_llama_model):
    model, tok, case = tiny_llama_model, llama_tok, make_case()
    edit = edit_for(model)
    records = oracle_records(model, tok, down_proj(model), case, edit, "cpu")
    items, _ = subject_items(case)
    assert [(r["group"], r["index"]) for r in records] == [(i.group, i.index) for i in items]
    k_star = reference_key(model, tok, case["prompt"], case["subject"])
    u = edit.u.double()
    arch = arch_for("llama")
    moved = 0
    for rec, it in zip(records, items):
        subject = case["subject"] if rec["group"] in ("success", "paraphrase", "patil") else \
            subject_of(case, rec["group"], rec["index"])
        a = reference_key(model, tok, it.text, subject)
        _, pos = encode_with_span(tok, it.text, *it.span)
        target = it.target
        shifted = a + (u @ k_star - u @ a) / (u @ u) * u
        want = {"rome_check": reference_hit(model, tok, edit, it.text, target, pos, None),
                "oracle_k_star": reference_hit(model, tok, edit, it.text, target, pos, k_star),
                "oracle_r_one": reference_hit(model, tok, edit, it.text, target, pos, shifted)}
        for name, (hit, logprob) in want.items():
            assert rec[name] == hit, (rec["group"], rec["index"], name)
            assert rec[f"{name}_logprob"] == pytest.approx(logprob, abs=1e-4), (rec["group"], rec["index"], name)
        moved += rec["oracle_k_star_logprob"] != rec["rome_check_logprob"]
        # the plain row is the evaluation's score of the item with the edit in W
        with torch.no_grad(), applied(down_proj(model), edit):
            score = score_batch(model, arch, [encode_item(tok, it.text, target)], "cpu")[0]
        assert rec["rome_check"] == float(score.argmax_ids == [*encode_item(tok, it.text, target).target_ids])
    assert moved >= len(records) // 2  # the replacement changes the scores it is checked on
    success = records[0]
    assert success["group"] == "success"
    assert success["oracle_k_star_logprob"] == success["rome_check_logprob"]  # k* replaced by itself


def test_summary_intervals_per_group():
    rows = [{"case_id": c, "group": g, "rome_em": float(c % 2), "rep_em": 1.0, "rome_check": float(c % 2),
             "oracle_k_star": 1.0, "oracle_r_one": 0.0} for c in range(6) for g in ("success", "rephrase_id")]
    out = summarise_oracles(rows, GROUPS)
    assert [r["group"] for r in out] == ["success", "rephrase_id"] and out[0]["n"] == 6
    assert out[0]["rome_em"] == 50.0 and out[0]["oracle_k_star"] == 100.0 and out[0]["oracle_r_one"] == 0.0
    assert out[0]["rome_em_lo"] < 50.0 < out[0]["rome_em_hi"]
    assert set(METHODS) <= set(out[0])
    # paired: oracle_k_star − rome_em is 100 − 50 on every resample's mean... of the same cases
    assert out[0]["oracle_k_star-rome_em"] == 50.0
    assert out[0]["rep_em-oracle_k_star"] == out[0]["rep_em-oracle_k_star_lo"] == 0.0
    assert out[0]["oracle_k_star-rome_em_lo"] < 50.0 < out[0]["oracle_k_star-rome_em_hi"]
