"""Where every file the pipeline reads and writes lives, relative to the project root (the stages
run there; dvc.yaml names the same paths). One place, so a folder moves in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

RAW = Path("data/raw")  # data/raw/<dataset>/: what the download stage fetched, with provenance.json
PREPARED = Path("data/prepared")  # <dataset>.npz (uint8 splits) and <dataset>.json (their description)
MODELS = Path("models")  # models/<name>/model.keras
REPORTS = Path("reports")  # reports/<name>/: a model's training and evaluation outputs; the report
COSTS = REPORTS / "costs"  # <stage>-<name>.json: wall times, speed, memory (not hashed by DVC)
FIGURES = REPORTS / "figures"  # the report's own figures (a model's are in its section)
SECTIONS = REPORTS / "sections"  # sections/<name>/: a model's part of the report (stage `section`)
DIAGNOSTICS = REPORTS / "diagnostics"
CHECKPOINTS = Path("checkpoints")  # checkpoints/<name>/: the last finished epoch of a training
GRID_RESULTS = Path("ablations/results")  # the quick grid's cells (stage `cell`)
FULL_GRID = Path("ablations/full-size")  # the full-size grid's pipeline: its dvc.yaml and dvc.lock
FULL_GRID_RESULTS = Path("ablations/results-full")  # its cells' results (stage `cell` of FULL_GRID)
FULL_GRID_RECORDS = Path("ablations/records-full")  # full-size cells trained outside DVC, with provenance
CLAIMS = Path("ablations/claims.json")
BENCH_RESULTS = Path("bench/results")  # the device check's runs (bench/device.py)


def prepared(dataset: str) -> tuple[Path, Path]:
    """(arrays .npz, description .json) of a prepared dataset."""
    return PREPARED / f"{dataset}.npz", PREPARED / f"{dataset}.json"


def model_file(name: str) -> Path:
    return MODELS / name / "model.keras"


def model_reports(name: str) -> Path:
    return REPORTS / name


def cost_record(stage: str, name: str) -> Path:
    return COSTS / f"{stage}-{name}.json"


def grid_result(variant: str, seed: int, size: str = "quick") -> Path:
    return (FULL_GRID_RESULTS if size == "full" else GRID_RESULTS) / f"{variant}-seed{seed}.json"


def grid_record(variant: str, seed: int) -> Path:
    return FULL_GRID_RECORDS / f"{variant}-seed{seed}.json"


def project_root() -> Path:
    """The project's root, also from inside a `dvc exp run --temp` / queued copy (which lives in
    <root>/.dvc/tmp/exps/...), so every experiment logs to the same store."""
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root
