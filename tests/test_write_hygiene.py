"""Write hygiene: atomic writers fsync the file before the rename and the directory after it, give
byte-identical files for equal objects (no temporary name inside), temporary files left by a killed
writer are removed on the stage's next run, and a failed stage writes no stage_config.json."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import rome as rome_script
import torch

from conftest import REPO
from robustedit.checkpoints import CasePieces
from robustedit.io import remove_stray_temps, save_torch, write_json, write_jsonl

PY = sys.executable


def test_atomic_write_fsyncs_file_then_renames_then_fsyncs_directory(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".out.json.")) and events[0][1].endswith(".tmp")  # the data
    assert events[1][1] == str(target) and events[2][1] == str(tmp_path)  # then the directory entry
    assert target.read_text() == '{\n "a": 1\n}\n'


def test_writers_give_byte_identical_files_without_temporary_names(tmp_path):
    """The rome stage wrote edits.pt with torch.save(obj, <temporary path>), which puts that random name
    inside the archive; every writer now gives the same bytes for the same object."""
    done = {"u": [torch.ones(3), torch.zeros(3)], "v": [torch.arange(4.0)] * 2,
            "diag": [{"case_id": 1}, {"case_id": 2}]}
    for name in ("a", "b"):
        rome_script.write_outputs(tmp_path / name, "valid", 1, done)
        save_torch({"x": torch.arange(5)}, tmp_path / name / "x.pt")
        write_jsonl(tmp_path / name / "r.jsonl", [{"a": 1}])
    for rel in ("valid.edits.pt", "valid.rome.jsonl", "x.pt", "r.jsonl"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for rel in ("valid.edits.pt", "x.pt"):  # torch's fixed inner folder, not the temporary file's name
        assert {n.split("/")[0] for n in zipfile.ZipFile(tmp_path / "a" / rel).namelist()} == {"archive"}, rel
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["r.jsonl", "valid.edits.pt", "valid.rome.jsonl",
                                                                 "x.pt"]


KILLED_WRITER = """
import os, signal, sys
from robustedit.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporary_file_of_a_killed_writer_is_removed_on_the_next_run(tmp_path):
    target = tmp_path / "valid.edits.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    res = subprocess.run([PY, "-c", KILLED_WRITER, str(target)], env=env, capture_output=True)
    assert res.returncode == -9
    stray = [p.name for p in tmp_path.iterdir()]
    assert len(stray) == 1 and stray[0].startswith(".valid.edits.pt.") and not target.exists()
    other_split = tmp_path / ".test.edits.pt.abcd_123.tmp"  # another job's file, maybe being written now
    shared = tmp_path / ".stage_config.json.x1y2z3w4.tmp"  # written by every split's job
    kept = [other_split, shared, tmp_path / ".hidden", tmp_path / "valid.rome.jsonl"]
    for p in kept:
        p.write_text("")
    assert remove_stray_temps(tmp_path, "valid.") == stray  # a split's job removes only its own
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    (tmp_path / ".cfh.abcdefgh.tmp").mkdir()  # Notebook.save's temporary folder
    assert remove_stray_temps(tmp_path) == [".cfh.abcdefgh.tmp", shared.name, other_split.name]  # a single-job dir
    assert sorted(tmp_path.iterdir()) == sorted(kept[2:])


def test_partial_folder_temporaries_are_removed_on_resume(tmp_path):
    stamp = {"stage": "rome", "stage_hash": "h", "code_version": "c"}
    pieces = CasePieces(tmp_path / "p", [1, 2], "rome", stamp=stamp)
    pieces.write(0, [1], [{"u": torch.ones(1)}])
    stray = tmp_path / "p" / ".000001.pt.k1ll3d00.tmp"
    stray.write_bytes(b"half a piece")
    assert len(pieces.resume()) == 1 and not stray.exists()


def test_failed_stage_leaves_no_stage_config(tmp_path):
    """rome without its cases file fails; the stage directory gets no stage_config.json (it is written
    only after the stage function returns) and no temporary file."""
    res = subprocess.run([PY, "scripts/rome.py", f"paths.results={tmp_path}", "job.split=valid",
                          "rome.mom2_adjustment=false"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0 and "valid.jsonl" in res.stdout + res.stderr
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == []
