"""What the Dask engine (classic_cnns/dispatch) gains and costs on this machine: the claims grid of a
project run by `dvc repro` directly, then by `python -m classic_cnns.dispatch --workers N` for each N,
all in one run, each time with every cell stale (params.yaml mlflow.experiment changed: a knob every
cell declares, which changes no result).

    python -m bench.dispatch PROJECT [--workers 1 2 4] [--out bench/results/dispatch-cpu.json]

PROJECT: a clone whose grid's data is prepared, e.g. the tests' tiny grid (two LeNet-5 variants, two
seeds: `pytest tests/test_ablations.py -k tiny_grid -n 0 --basetemp=<folder>`, then <folder>/grid/project).
It is copied first; the copy gets a local DVC remote. Stages start cold, as a user's do. Prints and
writes: wall time per run, each stage's seconds run directly and as a Dask task (the engine's
overhead per cell is the difference: checkout, pulls, pushes, the attempt's own start).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STAGE_LINE = re.compile(r"^(\S+): ran on worker (\S+) \([^)]*\) in ([\d.]+) s$")
RUNNING = re.compile(r"Running stage '([^']+)'")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from classic_cnns import environment

    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(args.project, project, symlinks=True)
        env = {k: v for k, v in os.environ.items() if k not in ("CLASSIC_CNNS_WARM", "MLFLOW_TRACKING_URI")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # dvc, python
        sh = lambda *cmd: subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, check=True)  # noqa: E731
        sh("dvc", "remote", "add", "-f", "-d", "bench", str(Path(tmp) / "remote"))
        sh("dvc", "push")
        direct = timed_direct(project, env, sh)
        runs = {n: timed_dispatch(project, env, sh, n) for n in args.workers}
    cells = [s for s in direct["stages"] if ":cell@" in s]
    record = {
        "environment": environment.describe(),
        "cells": len(cells),
        "direct": direct,
        "dispatch": runs,
        "overhead_per_cell_s": {n: round(mean(r, cells) - mean(direct, cells), 1) for n, r in runs.items()},
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def mean(run: dict, cells: list[str]) -> float:
    return statistics.mean(run["stages"][c] for c in cells)


def stale(project: Path, sh, name: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["mlflow"]["experiment"] = name
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", name)


def timed_direct(project: Path, env: dict, sh) -> dict:
    stale(project, sh, "bench-direct")
    started = time.monotonic()
    command = ["dvc", "repro", "ablations/dvc.yaml"]
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, text=True)
    stages, current, mark = {}, None, started
    for line in process.stdout:
        if found := RUNNING.search(line):
            now = time.monotonic()
            if current:
                stages[current] = round(now - mark, 1)
            current, mark = found.group(1), now
    if process.wait() != 0:
        raise SystemExit("dvc repro ablations/dvc.yaml failed")
    end = time.monotonic()
    if current:
        stages[current] = round(end - mark, 1)
    return {"wall_s": round(end - started, 1), "stages": stages}


def timed_dispatch(project: Path, env: dict, sh, workers: int) -> dict:
    stale(project, sh, f"bench-dispatch-{workers}")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "classic_cnns.dispatch", "ablations/dvc.yaml", "--workers", str(workers)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"dispatch with {workers} workers failed: {done.stderr.strip()}")
    stages = {m.group(1): float(m.group(3)) for m in map(STAGE_LINE.match, done.stdout.splitlines()) if m}
    return {"wall_s": round(time.monotonic() - started, 1), "stages": stages}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
