"""Shell quoting in rules/*.smk: every shell argument that comes from the config or a wildcard is quoted
(`{log:q}`, `{input.x:q}`, `{output.x:q}`, `{wildcards.split:q}`; params.overrides is shlex-quoted), so a
results folder with a space and a quote stays one argument and each job's log lands where it is declared
(unquoted, `paths.results="'my res'"` sent the error into a stray file `./my` and left the log empty)."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys

from conftest import REPO

PY = sys.executable
SNAKEMAKE = [PY, "-m", "snakemake", "-n", "--directory", str(REPO), "--snakefile", str(REPO / "Snakefile")]


def dry_run(tmp_path, overrides: list[str], *args: str) -> subprocess.CompletedProcess:
    """A dry run with `overrides` (Hydra tokens) applied to the run, passed through a config file so that
    no shell or Snakemake --config parsing touches them."""
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("overrides: " + json.dumps(shlex.join(overrides)) + "\n")
    return subprocess.run(SNAKEMAKE + [f"--configfile={cfg}", *args], cwd=REPO, capture_output=True, text=True)


def shell_commands(stdout: str) -> list[list[str]]:
    """The printed shell commands, split as the shell splits them (target rules print `None`)."""
    printed = [line.split(":", 1)[1].strip() for line in stdout.splitlines() if line.startswith("Shell command:")]
    return [shlex.split(cmd) for cmd in printed if cmd != "None"]


def test_results_path_with_space_and_quote_stays_one_argument(tmp_path):
    results = tmp_path / "it's my res"
    res = dry_run(tmp_path, [f'paths.results="{results}"'], "--printshellcmds")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    commands = shell_commands(res.stdout)
    assert len(commands) > 10
    for cmd in commands:
        log = cmd[cmd.index(">") + 1]
        assert log.startswith(f"{results}/") and log.endswith(".log") and cmd[-1] == "2>&1", cmd
        for token in cmd:  # no path was cut at its space or quote
            assert "my res" not in token or token.startswith(str(results)) or token.startswith("paths.results="), token
    splits = sorted(c[c.index(">") - 1] for c in commands if "scripts/rome.py" in c)
    assert splits == ["job.split=test", "job.split=valid"]
    table1 = next(c for c in commands if "scripts/table1.py" in c)
    assert table1[table1.index("--out-csv") + 1] == f"{results}/tables/table1.csv"
    assert not (REPO / "it's").exists() and not (REPO / "my").exists()
