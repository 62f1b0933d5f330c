"""Resume pieces sized for 7B models (checkpoints.CasePieces): each finished case is written once (O(N) writes in
all, where rewriting every state after each save was O(N²)), pieces are verified against the current
case_ids before use and discarded on any mismatch, and a killed run resumes to identical outputs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from robustedit.checkpoints import CasePieces
from robustedit.io import save_torch
from robustedit.models.arch import Architecture
from robustedit.rep import AdaptorConfig, RepResult, RepTrainConfig, adaptor_state, fit_rep_adaptor, init_params
from robustedit.evaluate.leakage import leak_guard
from test_evaluate import make_case

import rep as rep_script  # noqa: E402

LAYER = 1
ARCH = Architecture("llama", 4)
FORMAT = "robustedit.rep.adaptor/1"
STAMP = {"stage": "rep", "stage_hash": "0123456789", "code_version": "test"}  # checkpoints.checkpoint_stamp's shape


def stub_fit(d=16):
    """fit_case stand-in: a deterministic random adaptor per case_id (training is tested elsewhere)."""
    calls = []

    def fit(i, case):
        calls.append(case["case_id"])
        gen = torch.Generator().manual_seed(1000 + case["case_id"])
        params = init_params(d, AdaptorConfig(), gen)
        params["lora_B"] = torch.randn(d, 32, generator=gen)
        return RepResult(adaptor_state(params, AdaptorConfig()), {"pool": {"original": i}, "steps": []})

    fit.calls = calls
    return fit


def cases_of(ids):
    return [{"case_id": c} for c in ids]


def states_in(obj) -> int:
    """How many adaptor states a saved object holds."""
    if isinstance(obj, dict):
        return (obj.get("format") == FORMAT) + sum(states_in(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(states_in(v) for v in obj)
    return 0


@pytest.fixture
def saves(monkeypatch):
    """Every torch.save call: (final file name, adaptor states written, bytes written)."""
    real, log = torch.save, []

    def counting(obj, fh, *a, **k):
        real(obj, fh, *a, **k)
        final = re.sub(r"^\.(.*)\.[^.]+\.tmp$", r"\1", Path(fh.name).name)  # atomic_path's temporary name
        log.append((final, states_in(obj), fh.tell()))

    monkeypatch.setattr(torch, "save", counting)
    return log


def run_rep(tmp_path, cases, fit, split="valid"):
    states, logs = rep_script.train_cases(cases, fit, tmp_path / f"{split}.adaptors.partial", STAMP)
    rep_script.write_outputs(tmp_path, split, [c["case_id"] for c in cases], LAYER, states, logs)
    return torch.load(tmp_path / f"{split}.adaptors.pt", weights_only=True)


def assert_same_adaptors(a, b):
    assert a["case_ids"] == b["case_ids"] and a["layer"] == b["layer"] and len(a["states"]) == len(b["states"])
    for sa, sb in zip(a["states"], b["states"]):
        assert sa["config"] == sb["config"] and sa.keys() == sb.keys()
        assert all(torch.equal(sa["params"][k], sb["params"][k]) for k in sa["params"])


def test_rep_writes_each_case_once(tmp_path, saves):
    n = 24
    saved = run_rep(tmp_path, cases_of(range(n)), stub_fit())
    assert [s[1] for s in saves] == [1] * n + [n]  # one piece per case, then the final file once
    assert len({s[0] for s in saves}) == len(saves)  # no file rewritten
    per_case = saves[0][2]
    assert sum(s[2] for s in saves) < 2.2 * n * per_case  # O(N) bytes; rewriting every 8 cases: ~n²/16
    assert not (tmp_path / "valid.adaptors.partial").exists() and len(saved["states"]) == n
    logs = (tmp_path / "valid.rep.jsonl").read_text().splitlines()
    assert len(logs) == n and '"case_id": 3' in logs[3]


def test_killed_rep_run_resumes_to_identical_outputs(tmp_path, capsys, llama_tok, tiny_llama_model):
    """The real fit on a tiny model: a run killed after 2 of 3 cases, then rerun, writes the same files."""
    dp = ARCH.module(tiny_llama_model, "down_proj", LAYER)
    cases = [{**make_case(0), "case_id": c} for c in (7, 3, 9)]
    us = torch.randn(3, dp.in_features, generator=torch.Generator().manual_seed(0))
    us = us / us.norm(dim=1, keepdim=True)  # ROME's u is a unit vector
    templates = ["{}", "The. {}", "I {}"]

    def fit(i, case):
        return fit_rep_adaptor(tiny_llama_model, llama_tok, dp, case, templates, us[i],
                               leaks=leak_guard(llama_tok, case), tcfg=RepTrainConfig(steps=2, gate_loss_weight=0.5),
                               seed=0)

    def dies_at_third(i, case):
        if i == 2:
            raise KeyboardInterrupt  # the job is killed while training case 3
        return fit(i, case)

    whole = run_rep(tmp_path / "whole", cases, fit)
    with pytest.raises(KeyboardInterrupt):
        run_rep(tmp_path / "killed", cases, dies_at_third)
    partial = tmp_path / "killed" / "valid.adaptors.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["000000.pt", "000001.pt", "cases.json"]
    capsys.readouterr()
    resumed = run_rep(tmp_path / "killed", cases, fit)
    assert "resuming after 2 of 3 cases" in capsys.readouterr().out
    assert_same_adaptors(resumed, whole)
    for name in ("valid.adaptors.pt", "valid.rep.jsonl"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def partial_of(tmp_path, ids, n_done):
    """A partial folder holding the first n_done cases of `ids` (a run killed after them)."""
    fit = stub_fit()
    pieces = CasePieces(tmp_path / "valid.adaptors.partial", ids, "rep", stamp=STAMP)
    for i in range(n_done):
        res = fit(i, {"case_id": ids[i]})
        pieces.write(i, [ids[i]], [{"state": res.state, "log": {"case_id": ids[i], **res.log}}])
    return pieces


def tamper_case_ids(pieces):
    piece = torch.load(pieces.piece_path(1), weights_only=True)
    save_torch({**piece, "case_ids": [99]}, pieces.piece_path(1))


@pytest.mark.parametrize("damage", ["other_cases", "piece_case_ids", "gap", "unreadable"])
def test_mismatched_partial_is_discarded_not_resumed_onto(tmp_path, capsys, damage):
    ids = list(range(6))
    pieces = partial_of(tmp_path, ids, 3)
    if damage == "other_cases":
        ids = [5, 4, 3, 2, 1, 0]  # the cases file changed under the partial folder
    elif damage == "piece_case_ids":
        tamper_case_ids(pieces)
    elif damage == "gap":
        pieces.piece_path(1).unlink()
    else:
        pieces.piece_path(2).write_bytes(b"not a torch file")
    fit = stub_fit()
    got = run_rep(tmp_path, cases_of(ids), fit)
    out = capsys.readouterr().out
    assert "[rep] discarding" in out and "resuming" not in out
    assert fit.calls == ids  # every case trained afresh
    assert_same_adaptors(got, run_rep(tmp_path / "fresh", cases_of(ids), stub_fit()))


def test_pieces_of_several_cases_resume_at_the_right_case(tmp_path):
    """ROME's layout: one piece per chunk of cases; load returns the records in case order."""
    ids = [11, 12, 13, 14, 15]
    pieces = CasePieces(tmp_path / "valid.edits.partial", ids, "rome", stamp=STAMP)
    pieces.write(0, ids[:2], [{"u": torch.ones(3), "diag": {"case_id": 11}},
                              {"u": torch.zeros(3), "diag": {"case_id": 12}}])
    pieces.write(2, ids[2:4], [{"u": torch.full((3,), 2.0), "diag": {"case_id": c}} for c in ids[2:4]])
    got = CasePieces(tmp_path / "valid.edits.partial", ids, "rome", stamp=STAMP).load(mmap=False)
    assert [r["diag"]["case_id"] for r in got] == ids[:4] and torch.equal(got[2]["u"], torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="expected"):
        pieces.write(4, [99], [{"u": torch.ones(3)}])
