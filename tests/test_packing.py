"""Packed scoring (prompt + target + alternative in one row) against one plain forward per item."""
import pytest
import torch

from conftest import tiny_gemma, tiny_llama, tiny_model_cfg
from robustedit.edits import RankOneEdit, RankOneEditBatch
from robustedit.evaluate.packing import _row_layout, pack_items, packed_inputs
from robustedit.evaluate.scoring import encode_item, score_items
from robustedit.models.arch import Architecture

PAIRS = [("The mother tongue of Danielle Darrieux is", "French", "English"),
         ("The river rises in the northern hills and flows south through farmland and two small towns "
          "before it reaches the sea near an old harbour. Apple A5 was created by", "Apple Inc", "Google"),
         ("Toko Yasuda, the", "guitar player", "piano")]


def encoded(tok):
    out, case = [], []
    for ci, (prompt, new, true) in enumerate(PAIRS):
        out += [encode_item(tok, prompt, new), encode_item(tok, prompt, true)]
        case += [ci, ci]
    return out, case


def reference(model, e):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
    read = logits[e.n_prompt - 1: e.n_prompt - 1 + len(e.target_ids)]
    return read.argmax(-1).tolist(), torch.log_softmax(read, -1)[torch.arange(len(e.target_ids)),
                                                                 torch.tensor(e.target_ids)]


def test_layout_positions_and_reads():
    row = pack_items([encode_item_stub((5, 6, 7), (8, 9)), encode_item_stub((5, 6, 7), (4,))])[0]
    ids, pos, seg, reads = _row_layout(row)
    assert ids == [5, 6, 7, 8, 9, 4] and pos == [0, 1, 2, 3, 4, 3] and seg == [0, 0, 0, 1, 1, 2]
    assert reads == [[2, 3], [2]]  # branch 2's first token is predicted by the prompt's last token
    _, _, mask, _ = packed_inputs([row], "cpu", torch.float32)
    blocked = mask[0, 0] < 0
    assert not blocked[5, :3].any() and blocked[5, 3:5].all()  # the second branch never sees the first
    assert not blocked[4, 3] and blocked[2, 3]  # causal inside a branch; the prompt never sees a branch


def encode_item_stub(prompt, target):
    from robustedit.evaluate.scoring import EncodedItem

    return EncodedItem(tuple(prompt) + tuple(target), len(prompt), tuple(target))


@pytest.mark.parametrize("family,tok_name", [("llama", "llama_tok"), ("gemma3", "gemma_tok")])
def test_packed_scores_equal_one_forward_per_item(request, family, tok_name):
    tok = request.getfixturevalue(tok_name)
    build = tiny_llama if family == "llama" else tiny_gemma
    model = build(len(tok))
    if family == "gemma3":  # a window shorter than the long prompt, so the sliding mask matters
        model.config.sliding_window = 8
        for layer in model.model.layers:
            if getattr(layer.self_attn, "sliding_window", None):
                layer.self_attn.sliding_window = 8
    arch = Architecture.from_config(tiny_model_cfg(family))
    enc, _ = encoded(tok)
    got = score_items(model, arch, enc, batch_size=2, device="cpu")
    for e, s in zip(enc, got):
        argmax, logp = reference(model, e)
        assert s.argmax_ids == argmax
        assert torch.allclose(torch.tensor(s.logprobs), logp, atol=1e-5)
    assert len(pack_items(enc)) == len(PAIRS)  # each item shares its row with its alternative


def test_packed_rows_carry_per_case_edits(llama_tok):
    model = tiny_llama(len(llama_tok))
    arch = Architecture.from_config(tiny_model_cfg("llama"))
    g = torch.Generator().manual_seed(0)
    lin = arch.module(model, "down_proj", 1)
    edits = [RankOneEdit(1, torch.randn(lin.in_features, generator=g), 20 * torch.randn(lin.out_features, generator=g))
             for _ in PAIRS]
    enc, case = encoded(llama_tok)
    batch = RankOneEditBatch(model, arch, edits, "cpu")
    packed = score_items(model, arch, enc, 4, "cpu", batch.for_rows, case)
    plain = score_items(model, arch, enc, 4, "cpu", batch.for_rows, case, pack=False)
    for a, b in zip(packed, plain):
        assert a.argmax_ids == b.argmax_ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    unedited = score_items(model, arch, enc, 4, "cpu")
    assert any(a.argmax_ids != u.argmax_ids for a, u in zip(packed, unedited))  # the edits did act
