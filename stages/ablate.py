"""Stage `cell` of ablations/dvc.yaml: train and evaluate one variant of the claims grid, one seed.

    python -m stages.ablate alexnet-tanh 2

The variant's recipe is its base `models` entry with the variant's changes and the grid's budget
(params.yaml `ablations`); the seed picks the weights, the batch order and the training subset.
Writes ablations/results/<variant>-seed<seed>.json: per-epoch history and the measures the claims
table compares (test accuracy, learning speed, generalisation gap). Logged to MLflow as a child of
the grid's parent run, tagged with its variant and the claims it serves.

A run that diverges or does not learn is a result here, not an error: it is recorded with its
outcome (and its MLflow run marked FAILED with the reason), and the grid goes on.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from stages import environment, tracking
from stages.augment import epoch_data
from stages.params import Params, load_or_exit
from stages.train import TrainingFailed, build_compiled, check_learning, load_split, \
    seed_everything, stop_on_non_finite_loss

RESULTS_DIR = Path("ablations/results")
PARENT_TAG = "ablation_grid"


def result_path(variant: str, seed: int) -> Path:
    return RESULTS_DIR / f"{variant}-seed{seed}.json"


def budget(params: Params) -> dict:
    a = params.ablations
    return {"epochs": a.epochs, "train_limit": a.train_limit, "val_limit": a.val_limit, "test_limit": a.test_limit}


def grid_id(params: Params) -> str:
    """What makes results comparable: the budget and the base recipes (not the list of variants
    or seeds, so adding one keeps the same parent run)."""
    from stages.checkpoint import fingerprint

    return fingerprint(budget(params), {k: dataclasses.asdict(v) for k, v in params.models.items()},
                       dataclasses.asdict(params.prepare), dataclasses.asdict(params.data))[:16]


def parent_run_id(params: Params) -> str:
    """The grid's parent run: found by its tag, created by the first cell that needs it."""
    import mlflow

    tracking.use_store(params.mlflow.experiment)
    gid = grid_id(params)
    found = mlflow.search_runs(filter_string=f"tags.{PARENT_TAG} = '{gid}'", output_format="list",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(params.mlflow.experiment)
    a = params.ablations
    run = client.create_run(experiment.experiment_id, run_name=f"ablations ({a.epochs} epochs, "
                            f"{a.train_limit or 'all'} training images)",
                            tags={PARENT_TAG: gid, **tracking.run_tags(), **environment.describe()})
    for key, value in budget(params).items():
        client.log_param(run.info.run_id, f"ablations.{key}", value)
    return run.info.run_id


def subset(arrays: dict, params: Params, seed: int) -> dict[str, np.ndarray]:
    """The budget's images: a seeded training subset; the first val_limit/test_limit of the others."""
    a = params.ablations
    x, y = arrays["x_train"], arrays["y_train"]
    if a.train_limit and a.train_limit < len(x):
        keep = np.sort(np.random.default_rng([seed, 1]).choice(len(x), a.train_limit, replace=False))
        x, y = x[keep], y[keep]
    val, test = a.val_limit or None, a.test_limit or None
    return {"x_train": x, "y_train": y, "x_val": arrays["x_val"][:val], "y_val": arrays["y_val"][:val],
            "x_test": arrays["x_test"][:test], "y_test": arrays["y_test"][:test]}


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
    from stages.claims import CLAIMS

    return sorted({c.group for c in CLAIMS if variant in c.contrast})


def run_cell(params: Params, variant: str, seed: int) -> dict:
    import keras
    import mlflow

    cfg = params.ablations.model(params, variant)
    seed_everything(seed)
    arrays, meta = load_split(cfg.dataset)
    data = subset(arrays, params, seed)
    classes = len(meta["classes"])
    onehot = lambda y: keras.utils.to_categorical(y, classes)  # noqa: E731
    x_val, y_val = data["x_val"].astype("float32"), onehot(data["y_val"])
    steps_per_epoch = math.ceil(len(data["x_train"]) / cfg.batch_size)
    model = build_compiled(cfg, meta, steps_per_epoch)
    name = f"{variant} (seed {seed})"
    print(f"{name}: {cfg.architecture} on {meta['provenance']['title']}, {len(data['x_train'])} training "
          f"images, {cfg.epochs} epochs, {model.count_params():,} parameters", flush=True)

    parent = parent_run_id(params)
    run = mlflow.start_run(run_name=f"{variant}-seed{seed}", tags={
        "mlflow.parentRunId": parent, "ablation_variant": variant, "ablation_groups": ",".join(claim_groups(variant)),
        "ablation_seed": str(seed), **tracking.run_tags(), **environment.describe(),
        "architecture": cfg.architecture, "dataset": cfg.dataset,
        "dataset_official": str(meta["provenance"]["official"]).lower()})
    mlflow.log_params({**{f"model.{k}": v for k, v in dataclasses.asdict(cfg).items()},
                       **{f"ablations.{k}": v for k, v in budget(params).items()}, "seed": seed})
    history: dict[str, list[float]] = {}
    outcome, seconds = "learned", 0.0
    try:
        for epoch in range(cfg.epochs):
            x_epoch, y_epoch = epoch_data(data["x_train"], onehot(data["y_train"]), cfg, seed, epoch)
            started = time.perf_counter()
            try:
                fit = model.fit(x_epoch, y_epoch, batch_size=cfg.batch_size, epochs=epoch + 1, initial_epoch=epoch,
                                validation_data=(x_val, y_val), shuffle=False, verbose=0,
                                callbacks=[stop_on_non_finite_loss(variant)])
                epoch_seconds = time.perf_counter() - started
                seconds += epoch_seconds
                logs = {k: float(v[-1]) for k, v in fit.history.items()}
                for k, v in logs.items():
                    history.setdefault(k, []).append(v)
                mlflow.log_metrics(logs, step=epoch + 1)
                print(f"{name} epoch {epoch + 1}: loss {logs['loss']:.4f} val_accuracy {logs['val_accuracy']:.4f} "
                      f"({epoch_seconds:.1f} s)", flush=True)
                check_learning(variant, epoch + 1, logs, params, classes)
            except TrainingFailed as failure:
                outcome = failure.reason
                mlflow.set_tags({"failure_reason": failure.reason, "failure_epoch": str(failure.epoch)})
                print(f"{name}: {failure} -- recorded as this cell's outcome", flush=True)
                break
        batch = params.evaluate.batch_size
        test = dict(zip(["loss", "accuracy"], model.evaluate(
            data["x_test"].astype("float32"), onehot(data["y_test"]), batch_size=batch, verbose=0)))
        _, train_accuracy = model.evaluate(data["x_train"].astype("float32"), onehot(data["y_train"]),
                                           batch_size=batch, verbose=0)
        result = {
            "variant": variant, "seed": seed, "outcome": outcome, "epochs_run": len(history.get("loss", [])),
            **measures(history, cfg.epochs, float(train_accuracy), {k: float(v) for k, v in test.items()}),
            "train_seconds": round(seconds, 2), "parameters": int(model.count_params()),
            "train_images": len(data["x_train"]), "test_images": len(data["x_test"]),
            "dataset_official": meta["provenance"]["official"], "dataset_title": meta["provenance"]["title"],
            "device": environment.device(), "mlflow_run_id": run.info.run_id,
            "history": history,
        }
        mlflow.log_metrics({k: v for k, v in result.items() if isinstance(v, float) and math.isfinite(v)})
        write_json(result_path(variant, seed), result)
    except BaseException as exc:
        mlflow.end_run(status=tracking.interrupted_status(exc))
        raise
    mlflow.end_run(status="FINISHED" if outcome == "learned" else "FAILED")
    print(f"{name}: {outcome}; test accuracy {result['test_accuracy']:.4f}, {seconds:.0f} s", flush=True)
    return result


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    tracking.end_runs_on_sigterm()
    params = load_or_exit()
    a = params.ablations
    if len(argv) != 2 or argv[0] not in a.variants or not argv[1].lstrip("-").isdigit() or int(argv[1]) not in a.seeds:
        print(f"usage: python -m stages.ablate VARIANT SEED\n  VARIANT: {', '.join(a.variants)}\n"
              f"  SEED: {', '.join(map(str, a.seeds))} (params.yaml ablations)", file=sys.stderr)
        return 2
    run_cell(params, argv[0], int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
