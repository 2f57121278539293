"""The claims grid at full size on the device (`python -m bench.device --grid WORKERS`): each cell
its own process (`--cell VARIANT SEED`), WORKERS at a time on the one device, results in
ablations/results-full/ (the claims stage reads them). Runs without DVC and MLflow."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from classic_cnns import paths
from classic_cnns.params import Budget, load_params

ROOT = Path(__file__).resolve().parent.parent


def run(args: argparse.Namespace) -> int:
    from classic_cnns import outputs
    from classic_cnns.analysis import grid

    params = full_size_params(load_params(ROOT / "params.yaml"), args.epochs, args.images)
    if args.cell:
        variant, seed = args.cell[0], int(args.cell[1])
        result = grid.train_cell(params, variant, seed, "full")
        outputs.write_json(paths.grid_result(variant, seed, "full"), result, default=float)
        return 0
    passed = [
        *(["--epochs", str(args.epochs)] if args.epochs else []),
        *(["--images", str(args.images)] if args.images else []),
    ]
    summary = run_grid(params, args.grid, args.deadline, passed, args.variants)
    print(json.dumps(summary, indent=2), flush=True)
    return 0 if not summary["not_run"] else 1


def full_size_params(params, epochs: int | None, images: int | None):
    """params with the full-size grid's budget, shrunk by --epochs / --images for a quick look."""

    full = params.ablations.full_size
    shrunk = Budget(
        epochs=epochs or full.epochs,
        train_limit=images or full.train_limit,
        val_limit=images or full.val_limit,
        test_limit=images or full.test_limit,
    )
    return params.replace(ablations=params.ablations.replace(full_size=shrunk))


def run_grid(
    params, workers: int, deadline_s: float | None, passed: list[str], variants: list[str] | None = None
) -> dict:
    """The claims grid at full size (params.yaml ablations.full_size), `workers` cells at a time on
    the one device (each its own process), the longest first; writes ablations/results-full/.
    Cells already there are kept; after `deadline_s`, no new cell starts."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from classic_cnns.analysis import grid

    cells = [(v, s) for v in variants or params.ablations.variants for s in params.ablations.seeds]
    todo = [c for c in cells if not paths.grid_result(*c, "full").exists()]
    todo.sort(key=lambda c: params.ablations.model(params, c[0], "full").architecture != "alexnet")
    env = {
        **os.environ,
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / workers:.2f}",
        "PYTHONUNBUFFERED": "1",
        grid.CONCURRENT_ENV: str(workers),
    }
    started = time.perf_counter()

    def one(cell: tuple[str, int]) -> str:
        if deadline_s and time.perf_counter() - started > deadline_s:
            return "not started (deadline)"
        done = subprocess.run(
            [sys.executable, "-m", "bench.device", "--cell", cell[0], str(cell[1]), *passed],
            env=env,
            capture_output=True,
            text=True,
        )
        last = (done.stdout.strip().splitlines() or [""])[-1]
        print(f"{cell[0]} seed {cell[1]}: {last if done.returncode == 0 else done.stderr[-2000:]}", flush=True)
        return "done" if done.returncode == 0 else "failed"

    with ThreadPoolExecutor(workers) as pool:
        states = dict(zip(todo, pool.map(one, todo), strict=False))
    ran = [c for c, state in states.items() if state == "done"]
    return {
        "cells": len(cells),
        "ran": len(ran),
        "already_there": len(cells) - len(todo),
        "not_run": sorted(f"{v} seed {s}: {state}" for (v, s), state in states.items() if state != "done"),
        "workers": workers,
        "seconds": round(time.perf_counter() - started, 1),
        "budget": params.ablations.full_size.asdict(),
    }
