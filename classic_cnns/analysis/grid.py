"""The claims grid (ablations/dvc.yaml): one cell is one variant trained with one seed at the
grid's budget, then scored like any evaluation; its MLflow run is a child of the grid's parent run.

A run that diverges or does not learn is a result here, not an error: it is recorded with its
outcome (and its MLflow run marked FAILED with the reason), and the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from classic_cnns import costs, environment, outputs
from classic_cnns.analysis.claims import CLAIMS
from classic_cnns.data.prepared import load_split
from classic_cnns.errors import TrainingFailed
from classic_cnns.evaluation import scores
from classic_cnns.paths import FULL_GRID, FULL_GRID_RECORDS, grid_record, grid_result
from classic_cnns.training.checkpoint import fingerprint
from classic_cnns.training.session import Training

PARENT_TAG = "ablation_grid"
CONCURRENT_ENV = "CLASSIC_CNNS_CONCURRENT_CELLS"  # cells sharing the device (classic_cnns/dispatch.py sets it)
COST_KIND = {"quick": "cell", "full": "full-cell"}  # reports/costs/<kind>-<variant>-seed<seed>.json


def budget(params, size: str = "quick") -> dict:
    a = params.ablations.full_size if size == "full" else params.ablations
    return {"epochs": a.epochs, "train_limit": a.train_limit, "val_limit": a.val_limit, "test_limit": a.test_limit}


def grid_id(params, size: str = "quick") -> str:
    """What makes results comparable: the budget and the base recipes (not the list of variants
    or seeds, so adding one keeps the same parent run). Each budget has its own."""
    return fingerprint(
        budget(params, size),
        {k: v.asdict() for k, v in params.models.items()},
        params.prepare.asdict(),
        {k: v.asdict() for k, v in params.data.items()},
        *(["full"] if size == "full" else []),
    )[:16]


def parent_run_id(params, size: str = "quick") -> str:
    """The parent run of the grid at the budget `size` names: found by its tag, created by the
    first cell that needs it."""
    import mlflow

    from classic_cnns.tracking import runs, store  # MLflow: not needed by train_cell

    store.use_store(params.mlflow.experiment)
    gid = grid_id(params, size)

    def first() -> str | None:
        found = mlflow.search_runs(
            filter_string=f"tags.{PARENT_TAG} = '{gid}'",
            output_format="list",
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
        )
        return found[0].info.run_id if found else None

    uri = store.tracking_uri()
    with store.store_lock(uri):  # cells running at once (classic_cnns/dispatch.py) share one parent
        if found := first():
            return found
        client = mlflow.MlflowClient()
        experiment = mlflow.get_experiment_by_name(params.mlflow.experiment)
        spent = budget(params, size)
        run = client.create_run(
            experiment.experiment_id,
            run_name=f"ablations{' at full size' * (size == 'full')} ({spent['epochs']} epochs, "
            f"{spent['train_limit'] or 'all'} training images)",
            tags={PARENT_TAG: gid, "ablation_budget": size, **runs.run_tags(), **environment.describe()},
        )
        for key, value in grid_knobs(params, size).items():
            client.log_param(run.info.run_id, key, value)
        winner = first()  # on a server no file lock reaches the other machines: the earliest run wins
        if winner != run.info.run_id:
            client.delete_run(run.info.run_id)
        return winner


def grid_knobs(params, size: str) -> dict:
    """The budget as params.yaml names its keys (ablations.epochs, ablations.full_size.epochs, ...)."""
    prefix = "ablations.full_size" if size == "full" else "ablations"
    return {f"{prefix}.{k}": v for k, v in budget(params, size).items()}


def subset(arrays: dict, budget: dict, seed: int) -> dict[str, np.ndarray]:
    """The budget's images: a seeded training subset; the first val_limit/test_limit of the others."""
    x, y = arrays["x_train"], arrays["y_train"]
    if budget["train_limit"] and budget["train_limit"] < len(x):
        keep = np.sort(np.random.default_rng([seed, 1]).choice(len(x), budget["train_limit"], replace=False))
        x, y = x[keep], y[keep]
    val, test = budget["val_limit"] or None, budget["test_limit"] or None
    return {
        "x_train": x,
        "y_train": y,
        "x_val": arrays["x_val"][:val],
        "y_val": arrays["y_val"][:val],
        "x_test": arrays["x_test"][:test],
        "y_test": arrays["y_test"][:test],
    }


def measures(history: dict[str, list[float]], epochs: int, train_accuracy: float, test: dict) -> dict:
    """The numbers the claims compare. learning_speed is the mean validation accuracy over the
    budget's epochs (the area under the learning curve: higher = learned sooner); a run stopped
    early counts its last value for the epochs it did not run."""
    val = list(history.get("val_accuracy", []))
    val += [val[-1] if val else 0.0] * (epochs - len(val))
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "final_val_accuracy": val[-1],
        "learning_speed": float(np.mean(val)),
        "train_accuracy": train_accuracy,
        "generalisation_gap": train_accuracy - test["accuracy"],
    }


def claim_groups(variant: str) -> list[str]:
    return sorted({c.group for c in CLAIMS if variant in c.contrast})


def train_cell(params, variant: str, seed: int, size: str = "quick", observers=lambda progress: []) -> dict:
    """Train and score one cell at the budget `size` names; its result (no MLflow needed: the
    device check runs the full-size grid this way). `observers(progress)`: Keras callbacks to add."""
    cfg = params.ablations.model(params, variant, size)
    arrays, meta = load_split(cfg.dataset)
    spent = budget(params, size)
    data = subset(arrays, spent, seed)
    name = f"{variant} (seed {seed})"
    training = Training(name, cfg, seed, meta, data, params.health, knobs=f"ablations.variants.{variant}")
    print(
        f"{name}: {cfg.architecture} on {meta['provenance']['title']}, {len(data['x_train'])} training "
        f"images, {cfg.epochs} epochs, {training.model.count_params():,} parameters",
        flush=True,
    )
    outcome, failed_at = "learned", None
    try:
        model = training.run(observers(training.progress), progress_bar=False)
    except TrainingFailed as failure:
        model, outcome, failed_at = training.model, failure.reason, failure.epoch
        print(f"{name}: {failure} -- recorded as this cell's outcome", flush=True)
    progress = training.progress
    test, train = (
        scored(model, data[f"x_{split}"], data[f"y_{split}"], params.evaluate.batch_size) for split in ("test", "train")
    )
    history = {k: v for k, v in progress.history.items() if k != "epoch_seconds"}
    print(f"{name}: {outcome}; test accuracy {test['accuracy']:.4f}, {progress.seconds:.0f} s", flush=True)
    return {
        "variant": variant,
        "seed": seed,
        "budget": size,
        **{f"budget_{k}": v for k, v in spent.items()},
        "outcome": outcome,
        "failure_epoch": failed_at,
        "epochs_run": progress.epochs,
        **measures(history, cfg.epochs, train["accuracy"], test),
        "train_seconds": round(progress.seconds, 2),
        "parameters": int(model.count_params()),
        "train_images": len(data["x_train"]),
        "test_images": len(data["x_test"]),
        "dataset_official": meta["provenance"]["official"],
        "dataset_title": meta["provenance"]["title"],
        "device": environment.device(),
        "concurrent_cells": int(os.environ.get(CONCURRENT_ENV, "1")),
        "history": history,
    }


COSTS = ("train_seconds", "device", "concurrent_cells")  # in a cell's result, not in its DVC output


def scored(model, x, y, batch_size: int) -> dict[str, float]:
    return scores.accuracy_and_loss(model.predict(x.astype("float32"), batch_size=batch_size, verbose=0), y)


def run_cell(params, variant: str, seed: int, size: str = "quick") -> dict:
    """Train and score one cell at the budget `size` names; write its result file; log it as a
    child of that budget's MLflow parent run."""
    import mlflow

    from classic_cnns.tracking import runs  # MLflow: not needed by train_cell
    from classic_cnns.tracking.epochs import EpochLogger

    cfg = params.ablations.model(params, variant, size)
    _, meta = load_split(cfg.dataset)  # its tags (train_cell loads and seeds for the training)
    parent = parent_run_id(params, size)
    run = mlflow.start_run(
        run_name=f"{variant}-seed{seed}",
        tags={
            "mlflow.parentRunId": parent,
            "ablation_variant": variant,
            "ablation_groups": ",".join(claim_groups(variant)),
            "ablation_seed": str(seed),
            "ablation_budget": size,
            **runs.run_tags(),
            **environment.describe(),
            "architecture": cfg.architecture,
            **runs.dataset_tags(meta),
            **runs.owned_tags(),  # a killed cell's run is ended by the next stage (runs.end_orphans)
        },
    )
    loggers = []

    def log_epochs(progress):
        loggers.append(EpochLogger(f"{variant} (seed {seed})", progress, run.info.run_id))
        return loggers

    try:  # from the run's start: a stop is never left to MLflow's exit hook, which ends a run FINISHED
        runs.log_dataset(meta, "training")
        knobs = grid_knobs(params, size)
        mlflow.log_params({**{f"model.{k}": v for k, v in cfg.asdict().items()}, **knobs, "seed": seed})
        result = train_cell(params, variant, seed, size, observers=log_epochs)
        if result["outcome"] != "learned":
            mlflow.set_tags({"failure_reason": result["outcome"], "failure_epoch": str(result["failure_epoch"])})
        loggers[0].flush()
        mlflow.log_metrics({k: v for k, v in result.items() if isinstance(v, float) and math.isfinite(v)})
        # the DVC output holds what code, params and data decide; what the run cost, and where it was
        # logged, goes to reports/costs/<kind>-<variant>-seed<seed>.json (not hashed)
        cost = {k: result.pop(k) for k in COSTS}
        costs.write(COST_KIND[size], f"{variant}-seed{seed}", {**cost, "mlflow_run_id": run.info.run_id})
        outputs.write_json(grid_result(variant, seed, size), result, default=float)
    except BaseException as exc:
        runs.end_run(runs.interrupted_status(exc))
        raise
    mlflow.end_run(status="FINISHED" if result["outcome"] == "learned" else "FAILED")
    return result


def cells_budget(params, cells, size: str) -> dict:
    """The budget the cells ran at, as they recorded it (else as params.yaml says)."""
    keys = ("epochs", "train_limit", "val_limit", "test_limit")
    if len(cells) and all(f"budget_{k}" in cells for k in keys):
        return {k: int(cells[f"budget_{k}"].iloc[0]) for k in keys}
    return budget(params, size)


def load_cells(params, size: str = "quick"):
    """One row per (variant, seed) of params.yaml's grid at the budget `size` names. The quick
    grid's results must all be there (else an error naming the stages to run); of the full-size
    grid, whatever cells were made (full_size_cells)."""
    import pandas as pd

    if size == "full":
        return pd.DataFrame(full_size_cells(params))
    rows, missing = [], []
    for variant in params.ablations.variants:
        for seed in params.ablations.seeds:
            path = grid_result(variant, seed)
            if not path.exists():
                missing.append(f"cell@{variant}-{seed}")
                continue
            rows.append(cell_row(path))
    if missing:
        raise FileNotFoundError(f"no results for {', '.join(missing)}: run `dvc repro ablations/dvc.yaml`")
    return pd.DataFrame(rows)


def cell_row(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("history", "provenance")}


def full_size_cells(params) -> list[dict]:
    """The full-size grid's cells: each one the full-size pipeline made (its stage has run and
    ablations/full-size/dvc.lock vouches for the file), else the record of it trained outside DVC
    (ablations/records-full/), if that ran at params.yaml's full_size budget. `made_by` says which; a
    pipeline cell's device comes from its cost record. A result file the lock does not vouch for is an
    error naming the stage to rerun."""
    made = pipeline_outputs(FULL_GRID / "dvc.lock")
    wanted = budget(params, "full")
    rows = []
    for variant in params.ablations.variants:
        for seed in params.ablations.seeds:
            path, stage = grid_result(variant, seed, "full"), f"{FULL_GRID}/dvc.yaml:cell@{variant}-{seed}"
            if path.exists():
                if made.get(path.as_posix()) != hashlib.md5(path.read_bytes()).hexdigest():
                    raise ValueError(
                        f"{path} is not the output {FULL_GRID}/dvc.lock records for {stage}: "
                        f"run `dvc repro {stage}` (or move the file to {FULL_GRID_RECORDS}/ as a record)"
                    )
                device = costs.read(COST_KIND["full"], f"{variant}-seed{seed}").get("device")
                rows.append({**cell_row(path), "made_by": "pipeline", "device": device})
            elif (record := grid_record(variant, seed)).exists():
                row = cell_row(record)
                if {k: row.get(f"budget_{k}") for k in wanted} == wanted:
                    rows.append({**row, "made_by": "record"})
                else:
                    print(f"{record}: trained at another budget than ablations.full_size: not used")
    return rows


def pipeline_outputs(lock: Path) -> dict[str, str]:
    """{output path: md5} of the stages a dvc.lock records."""
    import yaml

    stages = yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def log_claims(params, table, files: list[Path]) -> None:
    """The claims files as artifacts of the grid's parent run, a tag per verdict; the run finishes."""
    import mlflow

    parent = parent_run_id(params)
    client = mlflow.MlflowClient()
    for path in files:
        client.log_artifact(parent, str(path), artifact_path="claims")
    for i, r in enumerate(table.itertuples()):
        client.set_tag(
            parent,
            f"claim.{i + 1}.{r.group}",
            f"{r.verdict}: {100 * r.difference:+.1f} points [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]",
        )
    client.set_terminated(parent, status="FINISHED")
    print(f"claims logged to MLflow run {parent}")
