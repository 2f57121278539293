"""Stage `train`: fit one model of params.yaml `models` and log it to MLflow.

    python -m stages.train lenet5

Reads data/prepared/<dataset>.npz; writes models/<name>/model.keras and run.json (the MLflow run,
which `evaluate` adds to), reports/<name>/history.csv (per-epoch loss and accuracy, a DVC plot),
architecture.csv (the layer table) and training.json (epochs, time, throughput, device).

Every epoch is checkpointed to checkpoints/<name>/, so a killed run rerun with `dvc repro`
continues from its last finished epoch and ends with the same weights as an uninterrupted run.
A non-finite loss, or a loss stuck at ln(classes) with chance accuracy, stops the stage with a
message, marks the MLflow run FAILED and writes no outputs.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import keras
import mlflow
import pandas as pd

from classic_cnns import environment, loop, tracking
from classic_cnns.checkpoint import Checkpoint, EveryEpoch, fingerprint
from classic_cnns.data import load_split
from classic_cnns.health import LearningCheck, StopOnNonFiniteLoss, TrainingFailed
from classic_cnns.models import layer_table
from classic_cnns.params import flatten, load_or_exit
from classic_cnns.recipe import build_compiled, seed_everything


def train(params, name: str) -> dict:
    cfg = params.model(name)
    seed_everything(params.seed)
    arrays, meta = load_split(cfg.dataset)
    classes = len(meta["classes"])
    x_train, y_train = arrays["x_train"], keras.utils.to_categorical(arrays["y_train"], classes)
    validation = (arrays["x_val"].astype("float32"), keras.utils.to_categorical(arrays["y_val"], classes))
    model = build_compiled(cfg, meta, math.ceil(len(x_train) / cfg.batch_size))
    ckpt = Checkpoint(Path("checkpoints") / name, fingerprint(dataclasses.asdict(cfg), params.seed, meta))
    state = ckpt.load(model) or {"epoch": 0, "history": {}, "train_seconds": 0.0, "run_id": None}
    print(f"{name}: {cfg.architecture} on {meta['provenance']['title']}, {len(x_train)} training images, "
          f"{model.count_params():,} parameters; training on {environment.device()} ({keras.backend.backend()} "
          "backend)" + (f"; resuming after epoch {state['epoch']}" if state["epoch"] else ""), flush=True)

    tracking.use_store(params.mlflow.experiment)
    logged = {"seed": params.seed, **flatten(cfg, "model"), "model.name": name, **flatten(params.health, "health")}
    run = tracking.start_training_run(name, cfg, meta, logged, state["run_id"])
    progress = loop.Progress(name, cfg.epochs, state["history"], state["train_seconds"])
    best = (loop.BestWeights(name, cfg.early_stopping_patience, state.get("best_val_accuracy"), state.get("best_epoch", 0),
                             ckpt.best_weights(state)) if cfg.early_stopping_patience else None)
    callbacks = [StopOnNonFiniteLoss(name), progress, tracking.EpochLogger(progress),
                 LearningCheck(name, params.health, classes), *([best] if best else []),
                 EveryEpoch(ckpt, progress, best, {"run_id": run.info.run_id}, state.get("best_state"))]
    try:
        loop.train_epochs(model, x_train, y_train, cfg, params.seed, validation, state["epoch"], callbacks)
        if best:
            best.restore()
        summary = write_outputs(name, model, progress, best, len(x_train), run.info.run_id)
    except TrainingFailed as failure:
        mlflow.set_tags({"failure_reason": failure.reason, "failure_epoch": str(failure.epoch),
                         "failure_message": str(failure)[:5000]})
        mlflow.end_run(status="FAILED")
        ckpt.clear()
        raise
    except BaseException as exc:  # the checkpoint stays: a rerun resumes this run
        mlflow.end_run(status=tracking.interrupted_status(exc))
        raise
    mlflow.end_run()
    ckpt.clear()
    print(f"{name}: trained {summary['epochs']} epochs in {summary['train_seconds']:.1f} s; val accuracy "
          f"{summary['final_val_accuracy']:.4f}; MLflow run {run.info.run_id}")
    return summary


def write_outputs(name: str, model, progress, best, n_train: int, run_id: str) -> dict:
    """The stage's outputs, the model first written to a temporary name; logged to the active run."""
    out_dir, report_dir = Path("models") / name, Path("reports") / name
    out_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.tmp.keras")
    os.replace(out_dir / "model.tmp.keras", out_dir / "model.keras")
    tracking.log_keras_model(model)
    history = progress.history
    pd.DataFrame({"epoch": range(1, progress.epochs + 1), **history}).to_csv(report_dir / "history.csv", index=False)
    layer_table(model).to_csv(report_dir / "architecture.csv", index=False)
    mlflow.log_artifact(str(report_dir / "history.csv"))
    summary = {"train_seconds": round(progress.seconds, 2), "epochs": progress.epochs,
               "train_images_per_second": round(n_train * progress.epochs / progress.seconds, 1),
               "final_train_accuracy": history["accuracy"][-1], "final_val_accuracy": history["val_accuracy"][-1],
               "parameters": int(model.count_params()), "device": environment.device(), **environment.peak_memory_mb()}
    if best:
        summary.update(best_epoch=best.best_epoch, stopped_early=best.stopped)
    mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    (report_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "run.json").write_text(json.dumps({"run_id": run_id, "tracking_uri": tracking.tracking_uri()}, indent=2) + "\n")
    return summary


def main(argv: list[str]) -> int:
    tracking.end_runs_on_sigterm()
    params = load_or_exit()
    if len(argv) != 1 or argv[0] not in params.models:
        print(f"usage: python -m stages.train {{{','.join(params.models)}}}", file=sys.stderr)
        return 2
    try:
        train(params, argv[0])
    except TrainingFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
