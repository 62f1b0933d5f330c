"""Analysis figures (REP Figures 3-5) on a tiny random model with the real SmolLM2 tokenizer: whitened
similarity, the perturbed keys, the unrelated-prefix scan, the rebuilt v*, and the plots."""
from __future__ import annotations

import random

import pytest
import torch

from conftest import tiny_llama
from robustedit.analysis import plots
from robustedit.analysis.keys import case_items, pca_rows, random_pair_rows, read_case_keys, variant_rows
from robustedit.analysis.tables import concat, read_csv, write_csv
from robustedit.analysis.unrelated import (encode_window, histogram_rows, scan_similar_keys, scan_windows,
                                           subject_cut, top_prefix_rows)
from robustedit.analysis.values import value_norm_rows
from robustedit.analysis.whiten import raw_cosine, whiten, whitened_cosine
from robustedit.edits import RankOneEdit, applied
from robustedit.hooks import capture_input
from robustedit.models.arch import Architecture
from robustedit.rome.compute_u import MomentSolver
from robustedit.rome.prompts import bare_rows, read_rows

LAYER = 1
ARCH = Architecture("llama", 4)
CASES = [
    {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "subject_rephrases": {"id": ["Danielle Darrieux", "Actress Danielle Darrieux"], "ood": ["Mlle Darrieux"]},
     "shuffled_subjects": {"id": ["rieux Danielle Dar"], "ood": ["Dar Danielle rieux"]},
     "long_context": {"held": ["It rained all day in the valley.", "The ship left port at dawn."],
                      "eval": "A long unrelated passage about trains."}},
    {"case_id": 1, "prompt": "Toko Yasuda, the", "subject": "Toko Yasuda",
     "subject_rephrases": {"id": ["Ms Yasuda"], "ood": []}, "shuffled_subjects": {"id": [], "ood": []},
     "long_context": {"held": [], "eval": "Weather report for the coast."}},
    {"case_id": 2, "prompt": "Apple A5 was created by", "subject": "Apple A5",
     "subject_rephrases": {"id": ["The A5 chip"], "ood": ["Apple's A5"]}, "shuffled_subjects": {},
     "long_context": {}},
]


@pytest.fixture(scope="module")
def model(llama_tok):
    return tiny_llama(len(llama_tok), seed=3)


def down_proj(model):
    return ARCH.module(model, "down_proj", LAYER)


@pytest.fixture(scope="module")
def solver(llama_tok, model):
    """A second moment of this model's keys (plus a ridge so it is well conditioned)."""
    ids = [llama_tok(t)["input_ids"] for t in ("The cat sat on the mat and looked out of the window.",
                                               "Paris is the capital of France, a country in Europe.")]
    keys = []
    for x in ids:
        with torch.no_grad(), capture_input(down_proj(model)) as cap:
            model(input_ids=torch.tensor([x]))
        keys.append(cap.value[0])
    k = torch.cat(keys).double()
    return MomentSolver(k.T @ k / k.shape[0] + 1e-3 * torch.eye(k.shape[1], dtype=torch.float64))


def key_at(model, tok, text, pos):
    with torch.no_grad(), capture_input(down_proj(model)) as cap:
        model(input_ids=torch.tensor([tok(text)["input_ids"]]))
    return cap.value[0, pos]


def test_whitened_cosine_is_the_normalised_c_inverse_inner_product(solver):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, solver.dim, generator=g), torch.randn(5, solver.dim, generator=g)
    ab = (a.double() * solver.solve(b)).sum(-1)
    aa, bb = (a.double() * solver.solve(a)).sum(-1), (b.double() * solver.solve(b)).sum(-1)
    torch.testing.assert_close(whitened_cosine(solver, a, b), ab / (aa * bb).sqrt())
    torch.testing.assert_close((whiten(solver, a) * whiten(solver, b)).sum(-1), ab)
    torch.testing.assert_close(whitened_cosine(solver, a[0], 3 * a[0:1]), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(raw_cosine(a[0:1], -a[0:1]), -torch.ones(1, dtype=torch.float64))


def test_case_items_label_every_variant():
    original, items = case_items(CASES[0])
    assert original.text == CASES[0]["prompt"] and original.kind == "original"
    assert [(g, it.kind) for g, _, it in items] == [
        ("id", "rephrase"), ("id", "rephrase"), ("ood", "rephrase"), ("id", "shuffle"), ("ood", "shuffle"),
        ("held", "long"), ("held", "long"), ("eval", "long")]
    assert [lab for _, lab, _ in items][-3:] == ["held[0]", "held[1]", "eval[0]"]
    assert items[-1][2].text == "A long unrelated passage about trains. " + CASES[0]["prompt"]


def test_case_keys_equal_single_forwards_and_rows(llama_tok, model, solver):
    cks = read_case_keys(model, llama_tok, down_proj(model), CASES, batch_rows=3)
    assert [len(ck.kinds) for ck in cks] == [8, 2, 2]
    # the original key is the subject-last key of the bare prompt ("...Darrieux" ends at token 5)
    pos = len(llama_tok("The mother tongue of Danielle Darrieux")["input_ids"]) - 1
    torch.testing.assert_close(cks[0].original, key_at(model, llama_tok, CASES[0]["prompt"], pos), rtol=1e-5, atol=1e-5)
    rows = variant_rows(solver, cks)
    assert len(rows) == 12 and {r["kind"] for r in rows} == {"rephrase", "shuffle", "long"}
    same = rows[0]  # the first rephrase is the subject itself: the very same key
    assert same["variant"] == "Danielle Darrieux" and same["similarity"] == pytest.approx(1.0, abs=1e-6)
    assert all(-1 - 1e-9 <= r["similarity"] <= 1 + 1e-9 for r in rows)
    pairs = random_pair_rows(solver, cks, 2, random.Random(0))
    assert len(pairs) == 2 and all(p["case_id"] != p["other_case_id"] for p in pairs)
    assert len(random_pair_rows(solver, cks, 100, random.Random(0))) == 3  # all pairs when fewer
    assert pairs == random_pair_rows(solver, cks, 2, random.Random(0))
    pca = pca_rows(solver, cks[0])
    assert len(pca) == 9 and pca[0]["kind"] == "original" and pca[0]["pc1"] >= 0 and pca[0]["pc2"] >= 0
    assert 0 < pca[0]["pc2_variance_ratio"] <= pca[0]["pc1_variance_ratio"] <= 1


def test_scan_windows_and_subject_cut(llama_tok):
    words = ("one two three four five six seven eight nine ten " * 3).split()
    wins = scan_windows(llama_tok, words, n_tokens=12, window_words=4, start=28)
    assert sum(len(w.ids) for w in wins) >= 12 and wins[0].text == "nine ten one two"  # wraps around
    assert len(scan_windows(llama_tok, words, n_tokens=10**6, window_words=4, start=0)) == 8  # one pass at most
    w = encode_window(llama_tok, "We met Danielle Darrieux in Paris")
    cut = subject_cut(w, "Danielle Darrieux")
    assert (llama_tok.decode(w.ids[:cut + 1]).endswith("Darrieux")
            and not llama_tok.decode(w.ids[:cut]).endswith("Darrieux"))
    assert subject_cut(w, "Toko Yasuda") == len(w.ids)


def test_scan_excludes_prefixes_with_the_subject_and_finds_the_best(llama_tok, model, solver):
    dp = down_proj(model)
    cks = read_case_keys(model, llama_tok, dp, CASES[:1])
    texts = ["The mother tongue of Danielle Darrieux is French and", "The mother tongue of many people",
             "Rain fell on the quiet town"]
    wins = [encode_window(llama_tok, t) for t in texts]
    keys = torch.stack([cks[0].original])
    res = scan_similar_keys(model, dp, solver, keys, ["Danielle Darrieux"], wins, top_k=3, batch_rows=2)
    assert res.n_keys == sum(len(w.ids) for w in wins)
    # brute force over the allowed positions
    allowed = []
    for wi, w in enumerate(wins):
        for t in range(subject_cut(w, "Danielle Darrieux")):
            k = key_at(model, llama_tok, w.text, t)
            allowed.append((float(whitened_cosine(solver, cks[0].original, k[None])), wi, t))
    allowed.sort(reverse=True)
    assert res.top_sim[0].tolist() == pytest.approx([s for s, _, _ in allowed[:3]], abs=1e-6)
    assert float(res.top_sim[0, 0]) < 0.999999  # the subject's own prefix is excluded
    free = scan_similar_keys(model, dp, solver, keys, ["not in any window"], wins, top_k=1, batch_rows=2)
    assert float(free.top_sim[0, 0]) == pytest.approx(1.0, abs=1e-6)  # ...and would match exactly
    assert res.counts.sum() == len(allowed)
    rows = top_prefix_rows(res, wins, [0], ["Danielle Darrieux"], llama_tok, tail_tokens=3)
    assert [r["rank"] for r in rows] == [1, 2, 3] and all("Darrieux" not in r["prefix_tail"] for r in rows)
    assert len(histogram_rows(res)) == 200


def test_v_star_rebuilt_from_the_edit_is_what_the_edited_layer_writes(llama_tok, model):
    cases = [{"case_id": c["case_id"], "prompt": c["prompt"], "subject": c["subject"]} for c in CASES]
    g = torch.Generator().manual_seed(1)
    dp = down_proj(model)
    u = torch.nn.functional.normalize(torch.randn(3, dp.in_features, generator=g), dim=-1)
    v = torch.randn(3, dp.out_features, generator=g)
    diags = [{"case_id": c["case_id"], "v_init_norm": 1.0, "delta_norm": 1.0} for c in cases]
    rows = value_norm_rows(model, llama_tok, ARCH, LAYER, cases, u, v, diags, batch_rows=2)
    _, out = read_rows(model, llama_tok, ARCH, LAYER, bare_rows(llama_tok, cases), "cpu", outputs=True)
    for i, row in enumerate(rows):
        with applied(dp, RankOneEdit(LAYER, u[i], v[i])):
            _, edited = read_rows(model, llama_tok, ARCH, LAYER, bare_rows(llama_tok, cases[i:i + 1]), "cpu",
                                  outputs=True)
        assert row["v_star_norm"] == pytest.approx(float(edited[0].norm()), rel=1e-4)
        assert row["v_init_norm"] == pytest.approx(float(out[i].norm()), rel=1e-6)
        assert row["norm_ratio"] == pytest.approx(row["v_star_norm"] / row["v_init_norm"])
    with pytest.raises(ValueError, match="diagnostics row 1"):
        value_norm_rows(model, llama_tok, ARCH, LAYER, cases, u, v, [diags[0], diags[2], diags[1]])


def test_csv_round_trip_and_plots_write_pngs(tmp_path):
    sim = [{"kind": k, "similarity": s, "raw_cosine": s / 2} for k in ("rephrase", "shuffle", "long", "random")
           for s in (0.1, 0.5, 0.9)]
    write_csv(tmp_path / "sim.csv", sim, ["kind", "similarity", "raw_cosine", "absent"])
    back = read_csv(tmp_path / "sim.csv")
    assert back[1] == {"kind": "rephrase", "similarity": "0.5", "raw_cosine": "0.25", "absent": ""}
    rows = concat([tmp_path / "sim.csv", tmp_path / "sim.csv"], [{"run": "a"}, {"run": "b"}])
    assert len(rows) == 24 and rows[0]["run"] == "a"
    plots.plot_key_similarity(rows, tmp_path / "sim.png")
    pca = [{"run": "a", "kind": k, "subject": "S", "pc1": i, "pc2": -i, "pc1_variance_ratio": 0.6,
            "pc2_variance_ratio": 0.2} for i, k in enumerate(("original", "rephrase", "shuffle", "long"))]
    plots.plot_key_pca(pca, tmp_path / "pca.png")
    top = [{"run": "a", "rank": "1", "similarity": "0.7"}, {"run": "a", "rank": "2", "similarity": "0.6"}]
    hist = [{"run": "a", "bin_lo": -1 + i / 10, "bin_hi": -1 + (i + 1) / 10, "count": i} for i in range(20)]
    plots.plot_unrelated(top, hist, rows, tmp_path / "unrelated.png")
    vals = [{"run": "a", "v_init_norm": 1 + i, "v_star_norm": 3 + i, "norm_ratio": (3 + i) / (1 + i)} for i in range(4)]
    plots.plot_value_norms(vals, tmp_path / "values.png")
    for name in ("sim", "pca", "unrelated", "values"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*.tmp"))
