"""The sequential protocol (robustedit.sequential) on a tiny random Llama in float64: each edit is computed
on the model the earlier ones wrote, against a plain loop over the single-edit functions on a copy of the
model; the checkpoints see the first N cases and N edits; the weights come back; AlphaEdit's accumulated
K_p K_pᵀ is what the reference's cache_c holds and keeps the preserved keys' outputs."""
from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import torch

from test_memit import ARCH, HP, TEMPLATES
from test_rome_core import CASES, spd
from conftest import REPO, tiny_llama
from robustedit.edits import apply_rank_one
from robustedit.errors import ConfigError, RecordError
from robustedit.memit import (alphaedit_solver, memit_keys, memit_solver, null_space_projector, residual_targets,
                              spread_update)
from robustedit.hashing import stage_hash
from robustedit.models.arch import Architecture
from robustedit.pipeline.config import compose
from robustedit.pipeline.sequential_config import at_layer, memit_layers, moment_layers
from robustedit.pipeline.stage import stage_file
from robustedit.rome import execute_rome_detailed
from robustedit.sequential import SEQUENTIAL_EDITORS, edit_counts, edit_order, run_sequence

LAYER, LAYERS = 2, (1, 2)


@pytest.fixture(scope="module")
def model(llama_tok):
    return tiny_llama(len(llama_tok), seed=11).double()


def down(model, layer):
    return model.model.layers[layer].mlp.down_proj.weight


def editor(name, tok, model, layers, **extra):
    D = model.config.intermediate_size
    return SEQUENTIAL_EDITORS[name](tok=tok, arch=ARCH, templates=TEMPLATES, hp=HP, device="cpu", layers=layers,
                                    moments={x: spd(D, 20 + x) for x in layers}, **extra)


def weights_after(model, arch_layers):
    """A score function that records the checkpoint's cases and weights."""
    seen = {}

    def score(m, cases):
        seen[len(cases)] = ([c["case_id"] for c in cases], {x: down(m, x).clone() for x in arch_layers})
        return len(cases)
    return score, seen


def test_edit_counts_and_the_seeded_order():
    assert edit_counts([10, 1, "all", 10], 12) == [1, 10, 12]
    for bad, message in (([0], "positive"), (["most"], "positive"), ([13], "13 edits"), ([], "empty")):
        with pytest.raises(ConfigError, match=message):
            edit_counts(bad, 12)
    order = edit_order(list(range(50)), seed=3)
    assert sorted(order) == list(range(50)) and order == edit_order(list(range(50)), seed=3)
    assert order != edit_order(list(range(50)), seed=4)


def test_sequential_rome_equals_a_plain_loop_of_single_edits(llama_tok, model):
    before = down(model, LAYER).clone()
    score, seen = weights_after(model, [LAYER])
    got = run_sequence(model, ARCH, editor("rome", llama_tok, model, (LAYER,)), CASES, [1, 3], score)
    assert got == {1: 1, 3: 3} and torch.equal(down(model, LAYER), before)  # restored
    assert seen[1][0] == [11] and seen[3][0] == [11, 12, 13]

    plain = copy.deepcopy(model)
    C = spd(model.config.intermediate_size, 20 + LAYER)
    single = []
    for n, case in enumerate(CASES, 1):
        req = {k: case[k] for k in ("case_id", "prompt", "subject", "target_new")}
        ((edit, _),) = execute_rome_detailed(plain, llama_tok, ARCH, [req], C, TEMPLATES, HP, "cpu", LAYER)
        apply_rank_one(plain.model.layers[LAYER].mlp.down_proj, edit)
        if n in seen:
            assert torch.allclose(seen[n][1][LAYER], down(plain, LAYER), rtol=1e-9, atol=1e-12), n
        single.append(execute_rome_detailed(model, llama_tok, ARCH, [req], C, TEMPLATES, HP, "cpu", LAYER)[0][0])
        # the keys sit below the edited weight, so each sequential edit's u is its single edit's: the rep stage's
        # adaptors (trained on the single edit's keys and u) are what sequential training would give
        torch.testing.assert_close(edit.u, single[-1].u, rtol=1e-10, atol=1e-12)
    # the second and third edits were computed on the edited model: not the single-edit protocol's
    sequential_delta = seen[3][1][LAYER] - seen[1][1][LAYER]
    independent = single[1].delta() + single[2].delta()
    assert (sequential_delta - independent).abs().max() > 1e-6 * independent.abs().max()


def test_sequential_memit_equals_a_plain_loop_and_one_batch_equals_spread_update(llama_tok, model):
    before = {x: down(model, x).clone() for x in LAYERS}
    score, seen = weights_after(model, LAYERS)
    ed = editor("memit", llama_tok, model, LAYERS, mom2_update_weight=2.0)
    run_sequence(model, ARCH, ed, CASES, [1, 3], score)
    assert all(torch.equal(down(model, x), before[x]) for x in LAYERS)

    plain = copy.deepcopy(model)
    for n, case in enumerate(CASES, 1):
        req = {k: case[k] for k in ("case_id", "prompt", "subject", "target_new")}
        z, _ = residual_targets(plain, llama_tok, ARCH, [req], TEMPLATES, HP, LAYERS[-1], "cpu")
        deltas = spread_update(plain, llama_tok, ARCH, [req], z, LAYERS, TEMPLATES, memit_solver(ed.moments, 2.0),
                               "cpu")
        for x in LAYERS:
            with torch.no_grad():
                down(plain, x).add_(deltas[x])
        if n in seen:
            for x in LAYERS:
                assert torch.allclose(seen[n][1][x], down(plain, x), rtol=1e-9, atol=1e-12), (n, x)
    assert all((seen[1][1][x] - before[x]).abs().max() > 0 for x in LAYERS)


def test_sequential_alphaedit_accumulates_the_edited_keys_and_keeps_preserved_outputs(llama_tok, model):
    D = model.config.intermediate_size
    ed = editor("alphaedit", llama_tok, model, LAYERS, l2=1.0)
    # half of key space preserved (eigenvalues at or above the median), as tests/test_memit.py
    ed.nullspace_threshold = float(torch.linalg.eigvalsh(ed.moments[LAYERS[0]])[D // 2])
    ed.__post_init__()
    before = {x: down(model, x).clone() for x in LAYERS}
    score, seen = weights_after(model, LAYERS)
    requests = [{k: c[k] for k in ("case_id", "prompt", "subject", "target_new")} for c in CASES]
    K1 = memit_keys(model, llama_tok, ARCH, LAYERS[0], requests[:2], TEMPLATES, "cpu")  # before any edit
    run_sequence(model, ARCH, ed, CASES, [2, 3], score, batch=2)
    plain = copy.deepcopy(model)  # the model after the first batch
    for x in LAYERS:
        with torch.no_grad():
            down(plain, x).copy_(seen[2][1][x])
    # the first layer's keys are read before its update: K_p K_pᵀ = K1 K1ᵀ + K2 K2ᵀ, K2 on the edited model
    K2 = memit_keys(plain, llama_tok, ARCH, LAYERS[0], requests[2:], TEMPLATES, "cpu")
    assert set(ed.previous) == set(LAYERS)
    assert torch.allclose(ed.previous[LAYERS[0]], K1 @ K1.T + K2 @ K2.T, rtol=1e-9, atol=1e-12)
    for x in LAYERS:
        eigvals, eigvecs = torch.linalg.eigh(ed.moments[x])
        preserved = eigvecs[:, eigvals >= float(torch.linalg.eigvalsh(ed.moments[x])[D // 2])]
        total = seen[3][1][x] - before[x]  # both batches' updates
        assert total.abs().max() > 0 and (total @ preserved).abs().max() < 1e-9 * total.abs().max(), x
    # the second batch's solve saw the first batch's K Kᵀ: without it the update differs
    z, _ = residual_targets(plain, llama_tok, ARCH, requests[2:], TEMPLATES, HP, LAYERS[-1], "cpu")
    P = {x: null_space_projector(ed.moments[x], ed.nullspace_threshold) for x in LAYERS}
    fresh = spread_update(plain, llama_tok, ARCH, requests[2:], z, LAYERS, TEMPLATES, alphaedit_solver(P, 1.0), "cpu")
    assert (fresh[LAYERS[0]] - (seen[3][1][LAYERS[0]] - seen[2][1][LAYERS[0]])).abs().max() > 1e-9


def test_weights_come_back_after_a_failure_and_bad_input_is_refused_before_editing(llama_tok, model):
    before = down(model, LAYER).clone()

    def fails(m, cases):
        assert not torch.equal(down(m, LAYER), before)  # the first edit is in the weights
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sequence(model, ARCH, editor("rome", llama_tok, model, (LAYER,)), CASES, [1, 2], fails)
    assert torch.equal(down(model, LAYER), before)
    bad = [*CASES[:1], {**CASES[1], "subject": "Nobody"}]
    with pytest.raises(RecordError, match="Nobody"):
        run_sequence(model, ARCH, editor("rome", llama_tok, model, (LAYER,)), bad, [1, 2], lambda m, c: 0)
    with pytest.raises(ConfigError, match="multiple of the batch"):
        run_sequence(model, ARCH, editor("memit", llama_tok, model, LAYERS), CASES, [1, 3], lambda m, c: 0, batch=2)
    with pytest.raises(ConfigError, match="one layer"):
        editor("rome", llama_tok, model, LAYERS)


def test_memit_layers_follow_the_rome_layer_unless_listed():
    cfg = compose([])
    assert cfg["model"]["layer"] == 4 and memit_layers(cfg) == [3, 4, 5, 6, 7]
    assert moment_layers(cfg) == [3, 4, 5, 6, 7]  # ROME's layer 4 among them: its stats directory is shared
    listed = compose(["eval.sequential.memit.layers=[1,2]", "eval.sequential.methods=[rome,alphaedit]"])
    assert memit_layers(listed) == [1, 2] and moment_layers(listed) == [1, 2, 4]
    with pytest.raises(ConfigError, match="outside the model's 30 layers"):
        memit_layers(compose(["eval.sequential.memit.layers=[28,30]"]))
    assert memit_layers(compose(["model.n_layers=4", "model.layer=1"])) == [0, 1, 2, 3]  # the default, within
    assert stage_hash(at_layer(cfg, 4), "stats") == stage_hash(cfg, "stats")
    assert len({stage_hash(at_layer(cfg, x), "stats") for x in moment_layers(cfg)}) == 5


def test_memit_on_a_family_it_does_not_support_is_refused_before_editing(llama_tok, model):
    with pytest.raises(ConfigError, match="gemma3"):
        SEQUENTIAL_EDITORS["memit"](tok=llama_tok, arch=Architecture("gemma3", 4), templates=TEMPLATES, hp=HP,
                                    device="cpu", layers=LAYERS, moments={x: torch.eye(4) for x in LAYERS})


def test_the_sequential_target_plans_a_stats_job_per_layer_and_one_sequential_eval(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(REPO), "sequential",
           "--config", f"overrides=paths.results={tmp_path}/results"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cfg = compose([f"paths.results={tmp_path}/results"])
    for x in moment_layers(cfg):
        assert str(stage_file(at_layer(cfg, x), "stats", "moment")) in res.stdout, x
    assert str(stage_file(cfg, "sequential_eval", "summary", "test")) in res.stdout
    assert re.search(r"^stats\s+5$", res.stdout, re.M) and re.search(r"^sequential_eval\s+1$", res.stdout, re.M)
