"""Resume checkpoints that cannot lie: a partial folder (rome, rep) or mom2.partial.pt (stats) is used only
if it was written for the same cases, stage hash and code version (checkpoints.checkpoint_stamp) and covers the same
rows; anything else (scaled values stamped by other code or another stage hash, other case_ids, a pickle
payload, a forced rerun) is discarded with a message, never executed, never resumed onto."""
from __future__ import annotations

import ast
import os
import zipfile
from pathlib import Path

import stats as stats_script
import pytest
import rep as rep_script
import rome as rome_script
import torch

from conftest import REPO, tiny_llama
from robustedit.checkpoints import CasePieces, checkpoint_stamp, code_version, load_checkpoint
from robustedit.io import save_torch
from robustedit.models.arch import Architecture
from robustedit.rome import compute_second_moment
from robustedit.rome.stats import ResumeMismatch, select_documents
from test_storage import assert_same_adaptors, cases_of, stub_fit

STAMP = {"stage": "rome", "stage_hash": "0123456789", "code_version": "0123456789abcdef"}
IDS = [7, 3]
ARCH, LAYER = Architecture("llama", 4), 1


def v_of(case_id: int) -> torch.Tensor:
    return torch.arange(4.0) + case_id


def stub_edit(calls: list):
    """edit_chunk stand-in: u and v determined by the case_id (ROME itself is tested elsewhere)."""
    def edit_chunk(chunk):
        calls.extend(c["case_id"] for c in chunk)
        return [{"u": torch.full((3,), float(c["case_id"])), "v": v_of(c["case_id"]), "diag": {"case_id": c["case_id"]}}
                for c in chunk]
    return edit_chunk


def scaled_partial(folder: Path, ids: list, stamp: dict) -> None:
    """The probe: a finished partial folder whose v are 2x the true ones, stamped `stamp`."""
    pieces = CasePieces(folder, ids, "rome", stamp=stamp)
    for i, cid in enumerate(ids):
        pieces.write(i, [cid], [{"u": torch.full((3,), float(cid)), "v": 2 * v_of(cid), "diag": {"case_id": cid}}])


def run_rome(out: Path, ids: list, fresh: bool = False, stamp: dict = STAMP) -> tuple[dict, list]:
    calls: list = []
    done = rome_script.edit_cases(cases_of(ids), stub_edit(calls), out / "valid.edits.partial", 1, stamp, fresh=fresh)
    rome_script.write_outputs(out, "valid", LAYER, done)
    return torch.load(out / "valid.edits.pt", weights_only=True), calls


@pytest.mark.parametrize("change", ["code_version", "stage_hash", "stage", "case_ids"])
def test_scaled_partial_from_other_code_hash_or_cases_is_discarded(tmp_path, capsys, change):
    stamp, ids = dict(STAMP), list(IDS)
    if change == "case_ids":
        ids = [9, 8]
    else:
        stamp[change] = "other"
    scaled_partial(tmp_path / "valid.edits.partial", ids, stamp)
    got, calls = run_rome(tmp_path, IDS)
    out = capsys.readouterr().out
    assert "[rome] discarding" in out and "resuming" not in out
    assert change in out  # the message names what differs
    assert calls == IDS and torch.equal(got["v"], torch.stack([v_of(c) for c in IDS]))  # never 2 x v
    assert not (tmp_path / "valid.edits.partial").exists()


def test_forced_rerun_discards_even_a_matching_partial(tmp_path, capsys):
    """`snakemake --forcerun rome` passes job.fresh=true: the probe's 2 x v partial is not resumed onto."""
    scaled_partial(tmp_path / "valid.edits.partial", IDS, STAMP)
    got, calls = run_rome(tmp_path, IDS, fresh=True)
    out = capsys.readouterr().out
    assert "forced rerun (job.fresh=true)" in out and "resuming" not in out
    assert calls == IDS and torch.equal(got["v"], torch.stack([v_of(c) for c in IDS]))


def test_matching_partial_is_resumed(tmp_path, capsys):
    """The control: the same stamp and cases without a forced rerun resume (and trust the pieces)."""
    scaled_partial(tmp_path / "valid.edits.partial", IDS, STAMP)
    got, calls = run_rome(tmp_path, IDS)
    assert "resuming after 2 of 2 cases" in capsys.readouterr().out and calls == []
    assert torch.equal(got["v"], torch.stack([2 * v_of(c) for c in IDS]))


class Payload:
    """A pickle that runs a shell command when unpickled by a full (weights_only=False) loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_payload_in_a_piece_is_refused_never_run(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    scaled_partial(tmp_path / "valid.edits.partial", IDS, STAMP)
    piece = CasePieces(tmp_path / "valid.edits.partial", IDS, "rome", stamp=STAMP).piece_path(1)
    torch.save({"first": 1, "case_ids": [3], "stamp": STAMP, "records": [Payload(marker)]}, piece)
    with zipfile.ZipFile(piece) as z:  # the probe is real: the pickle calls os.system (posix.system) on load
        pickled = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"system" in pickled and f"touch {marker}".encode() in pickled
    got, calls = run_rome(tmp_path, IDS)
    out = capsys.readouterr().out
    assert "[rome] discarding" in out and "resuming" not in out and not marker.exists()
    assert "refused by the weights_only loader" in out and "posix.system" in out
    assert calls == IDS and torch.equal(got["v"], torch.stack([v_of(c) for c in IDS]))


def test_rep_partial_of_another_code_version_is_discarded(tmp_path, capsys):
    stamp = {**STAMP, "stage": "rep"}
    ids = list(range(4))
    rep_script.train_cases(cases_of(ids), stub_fit(), tmp_path / "p", stamp)  # a finished run's pieces
    fit = stub_fit()
    got = rep_script.train_cases(cases_of(ids), fit, tmp_path / "p", {**stamp, "code_version": "new"})
    assert "[rep] discarding" in capsys.readouterr().out and fit.calls == ids
    fresh = stub_fit()
    rep_script.train_cases(cases_of(ids), fresh, tmp_path / "p", {**stamp, "code_version": "new"}, fresh=True)
    assert fresh.calls == ids  # a forced rerun trains every case again
    again = rep_script.train_cases(cases_of(ids), stub_fit(), tmp_path / "q", stamp)
    assert_same_adaptors({"case_ids": ids, "layer": 1, "states": got[0]},
                         {"case_ids": ids, "layer": 1, "states": again[0]})


# ---------------------------------------------------------------- mom2.partial.pt


def stats_checkpoint(tmp_path, stamp, **extra) -> Path:
    path = tmp_path / "mom2.partial.pt"
    save_torch({"sum": torch.ones(2, 2), "count": 3, "n_docs_done": 1, "meta": {}, "rows_sha256": "x",
                "stamp": stamp, **extra}, path)
    return path


@pytest.mark.parametrize("change", ["code_version", "stage_hash", "missing"])
def test_stats_checkpoint_of_other_stamp_is_discarded(tmp_path, capsys, change):
    stamp = {**STAMP, "stage": "stats"}
    found = None if change == "missing" else {**stamp, change: "other"}
    path = stats_checkpoint(tmp_path, found)
    assert load_checkpoint(path, stamp, "stats") is None and not path.exists()
    out = capsys.readouterr().out
    assert "[stats] discarding" in out and ("no checkpoint stamp" if change == "missing" else change) in out
    path = stats_checkpoint(tmp_path, stamp)
    assert load_checkpoint(path, stamp, "stats")["count"] == 3  # the matching one is used
    assert load_checkpoint(path, stamp, "stats", fresh=True) is None and not path.exists()


def test_stats_checkpoint_pickle_payload_is_refused(tmp_path, capsys):
    marker, path = tmp_path / "payload_ran", tmp_path / "mom2.partial.pt"
    torch.save({"stamp": STAMP, "sum": Payload(marker)}, path)
    assert load_checkpoint(path, STAMP, "stats") is None
    assert not marker.exists() and not path.exists() and "refused by the weights_only loader" in capsys.readouterr().out


def test_stats_checkpoint_of_other_rows_restarts(llama_tok, capsys, tmp_path):
    """A checkpoint over rows that are not this run's first rows (an edited data file) is discarded before
    any work and the run starts afresh: the result equals a fresh run on the new rows."""
    texts = (REPO / "resources/data/wikitext/wiki.valid.raw").read_text(encoding="utf-8").split("\n")[:40]
    texts = [t for t in texts if t.strip()]
    model = tiny_llama(len(llama_tok), seed=1).double()
    kw = dict(n_samples=12, max_length=40, batch_tokens=64, checkpoint_every=4)
    saved: list = []
    compute_second_moment(model, llama_tok, ARCH, LAYER, texts, on_checkpoint=saved.append, **kw)
    edited = list(texts)
    edited[select_documents(len(texts), 12, 1)[0]] = "an edited first row"
    with pytest.raises(ResumeMismatch, match="rows"):
        compute_second_moment(model, llama_tok, ARCH, LAYER, edited, state=saved[0], **kw)
    partial = tmp_path / "mom2.partial.pt"
    save_torch(saved[0], partial)

    def run(state):
        return compute_second_moment(model, llama_tok, ARCH, LAYER, edited, state=state, **kw)

    got = stats_script.resume_or_restart(run, saved[0], partial)
    assert "[stats] discarding" in capsys.readouterr().out and not partial.exists()
    assert got.stats["resumed_from_docs"] == 0 and torch.equal(got.accumulator.sum, run(None).accumulator.sum)


# ---------------------------------------------------------------- stamps and loaders


def test_code_version_covers_library_scripts_and_numeric_packages(tmp_path, monkeypatch):
    import robustedit.checkpoints as ckpt

    library, script = tmp_path / "robustedit", tmp_path / "stage.py"
    library.mkdir()
    (library / "mod.py").write_text("y = 1\n")
    script.write_text("x = 1\n")
    monkeypatch.setattr(ckpt, "LIBRARY", library)
    seen = {code_version(script)}
    assert seen == {code_version(script)} and len(next(iter(seen))) == 16  # deterministic
    script.write_text("x = 2\n")  # the stage script
    seen.add(code_version(script))
    (library / "mod.py").write_text("y = 2\n")  # any library source
    seen.add(code_version(script))
    monkeypatch.setattr(ckpt, "_package_version", lambda name: "9.9")  # a torch / transformers upgrade
    seen.add(code_version(script))
    assert len(seen) == 4
    stamp = checkpoint_stamp("rome", tmp_path / "abc0123456", [script])
    assert stamp == {"stage": "rome", "stage_hash": "abc0123456", "code_version": code_version(script)}


def torch_load_calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            yield node


def test_every_torch_load_in_the_repo_is_weights_only():
    """No full unpickler anywhere: scripts, library, benchmarks and tests load torch files weights_only."""
    offenders, n = [], 0
    for folder in ("scripts", "workflow", "benchmarks", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for call in torch_load_calls(path):
                n += 1
                kw = {k.arg: k.value for k in call.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert n > 10 and offenders == []
