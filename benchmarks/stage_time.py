"""Stage time of a Snakemake target, summed from its jobs' benchmark files (what `benchmark:` recorded when each
job last ran), without running anything: the DAG comes from `snakemake -n --forceall`.

    .venv/bin/python benchmarks/stage_time.py all
    .venv/bin/python benchmarks/stage_time.py all --config 'overrides=benchmark=zsre'
Prints seconds per rule (jobs, wall time, CPU time) and the total; a job whose benchmark file is missing (never
run, or run before its rule had one) is listed and left out of the total.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def planned_jobs(targets: list[str], config: list[str]) -> list[tuple[str, str | None]]:
    """(rule, benchmark file or None) of every job the targets need, from a forced dry run."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1", *targets]
    cmd += ["--config", *config] if config else []
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"snakemake dry run failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    jobs, rule = [], None
    for line in res.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.rstrip().endswith(":"):
            if rule is not None:
                jobs.append((rule, None))
            rule = line.split()[1].rstrip(":")
        elif rule is not None and line.strip().startswith("benchmark:"):
            jobs.append((rule, line.split(":", 1)[1].strip()))
            rule = None
        elif rule is not None and not line.strip():
            jobs.append((rule, None))
            rule = None
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", default=["all"])
    ap.add_argument("--config", nargs="*", default=[], help="passed to snakemake --config")
    args = ap.parse_args()
    wall, cpu, count, missing = defaultdict(float), defaultdict(float), defaultdict(int), []
    for rule, bench in planned_jobs(args.targets, args.config):
        if bench is None:
            continue  # a target rule (all) or a job without a benchmark
        path = REPO / bench
        if not path.is_file():
            missing.append(f"{rule}: {bench}")
            continue
        row = list(csv.DictReader(path.open(), delimiter="\t"))[-1]
        wall[rule] += float(row["s"])
        cpu[rule] += float(row.get("cpu_time") or 0.0)
        count[rule] += 1
    print(f"{'rule':<20} {'jobs':>4} {'wall s':>9} {'cpu s':>9}")
    for rule in sorted(wall, key=wall.get, reverse=True):
        print(f"{rule:<20} {count[rule]:>4} {wall[rule]:>9.1f} {cpu[rule]:>9.1f}")
    total = sum(wall.values())
    print(f"{'total':<20} {sum(count.values()):>4} {total:>9.1f} {sum(cpu.values()):>9.1f}   ({total / 3600:.2f} h)")
    for line in missing:
        print(f"no benchmark file (left out): {line}")


if __name__ == "__main__":
    main()
