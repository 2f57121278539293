"""Stage `train`: fit one model of params.yaml `models` and log it to MLflow.

    python -m stages.train lenet5

Reads data/prepared/<dataset>.npz; writes models/<name>/model.keras (byte-stable: its sha256 tags
the MLflow run, which `evaluate` finds by it and adds to), reports/<name>/history.csv (per-epoch
loss and accuracy, a DVC plot), architecture.csv (the layer table) and training.json (epochs,
final accuracies, parameters); the wall times, throughput, memory and device go to
reports/costs/train-<name>.json, which DVC does not hash (classic_cnns/costs.py).

Every epoch is checkpointed to checkpoints/<name>/, so a killed run rerun with `dvc repro`
continues from its last finished epoch, in the same MLflow run (each epoch logged once), and ends
with the same weights as an uninterrupted run. A tracking server that stops answering does not stop
training; if it is still away at the end, the stage stops keeping the checkpoint, and a rerun logs
the missing epochs and writes the outputs without training again. A non-finite loss, or a loss
stuck at ln(classes) with chance accuracy, stops the stage with a message, marks the MLflow run
FAILED and writes no outputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import mlflow
import pandas as pd

from classic_cnns import costs, environment, outputs, paths
from classic_cnns.training import distribute
from classic_cnns.training import loop
from classic_cnns.tracking import store as tracking
from classic_cnns.training.checkpoint import Checkpoint, EveryEpoch, fingerprint
from classic_cnns.errors import run_stage
from classic_cnns.data.prepared import load_split
from classic_cnns.training.health import LearningCheck, StopOnNonFiniteLoss, TrainingFailed
from classic_cnns.model.networks import layer_table
from classic_cnns.params import flatten, load_or_exit
from classic_cnns.model.recipe import build_compiled, seed_everything


def load_inputs(params, cfg):
    """(x_train, one-hot y_train, validation, dataset meta), seeded first."""
    seed_everything(params.seed)
    arrays, meta = load_split(cfg.dataset)
    classes = len(meta["classes"])
    y_train = keras.utils.to_categorical(arrays["y_train"], classes)
    validation = (arrays["x_val"].astype("float32"), keras.utils.to_categorical(arrays["y_val"], classes))
    return arrays["x_train"], y_train, validation, meta


def train_share(params, name: str, placement: distribute.Placement) -> None:
    """A process other than the first of a multi-process training: the same epochs, feeding its
    share of every batch; the first process writes the outputs and logs the run."""
    cfg = params.model(name)
    x_train, y_train, validation, meta = load_inputs(params, cfg)
    model = build_compiled(cfg, meta, math.ceil(len(x_train) / cfg.batch_size))
    print(f"{name}: process {placement.index + 1} of {placement.processes}, {placement.devices} devices in all",
          flush=True)
    callbacks = [StopOnNonFiniteLoss(name), LearningCheck(name, params.health, len(meta["classes"]))]
    if cfg.early_stopping_patience:
        callbacks.append(loop.BestWeights(name, cfg.early_stopping_patience))
    loop.train_epochs(model, x_train, y_train, cfg, params.seed, validation, 0, callbacks, placement=placement)


def train(params, name: str) -> dict:
    cfg = params.model(name)
    placement = distribute.place(cfg.devices, cfg.batch_size)  # before the model is built
    if not placement.chief:
        return train_share(params, name, placement)
    tracking.use_store(params.mlflow.experiment)  # a tracking fault costs seconds, before any work
    x_train, y_train, validation, meta = load_inputs(params, cfg)
    classes = len(meta["classes"])
    build = functools.partial(build_compiled, cfg, meta, math.ceil(len(x_train) / cfg.batch_size))
    model = build()
    ckpt = Checkpoint(paths.CHECKPOINTS / name, fingerprint(dataclasses.asdict(cfg), params.seed, meta))
    if placement.processes > 1:  # the other processes start at epoch 1 too
        ckpt.clear()
    state = ckpt.load(model) or {"epoch": 0, "history": {}, "train_seconds": 0.0, "run_id": None}
    where = environment.device() + (f" x{placement.devices}" if placement.devices > 1 else "") + (
        f" in {placement.processes} processes" if placement.processes > 1 else "")
    print(f"{name}: {cfg.architecture} on {meta['provenance']['title']}, {len(x_train)} training images, "
          f"{model.count_params():,} parameters; training on {where} ({keras.backend.backend()} "
          "backend)" + (f"; resuming after epoch {state['epoch']}" if state["epoch"] else ""), flush=True)

    logged = {"seed": params.seed, **flatten(cfg, "model"), "model.name": name, **flatten(params.health, "health")}
    uri = tracking.tracking_uri()
    with tracking.failures_named(uri, "starting the run"):
        run = tracking.start_training_run(name, cfg, meta, logged, state["run_id"])
        run_id = run.info.run_id
        logged_epochs = tracking.logged_epochs(run_id) if state["epoch"] else 0
    progress = loop.Progress(name, cfg.epochs, state["history"], state["train_seconds"])
    logger = loop.EpochLogger(name, progress, run_id, logged_epochs)
    best = (loop.BestWeights(name, cfg.early_stopping_patience, state.get("best_val_accuracy"), state.get("best_epoch", 0),
                             ckpt.best_weights(state), state.get("stopped", False)) if cfg.early_stopping_patience else None)
    callbacks = [StopOnNonFiniteLoss(name), progress, logger, LearningCheck(name, params.health, classes),
                 *([best] if best else []), EveryEpoch(ckpt, progress, best, {"run_id": run_id}, state.get("best_state"))]
    kept = (f"; the trained model is kept in {ckpt.folder}/: rerun when the store answers, which logs what is "
            "missing and writes the outputs without training again")
    try:
        if not state.get("stopped"):
            loop.train_epochs(model, x_train, y_train, cfg, params.seed, validation, state["epoch"], callbacks,
                              placement=placement)
        if best:
            best.restore()
        if placement.processes > 1:
            model = distribute.to_one_device(model, build)
        with tracking.failures_named(uri, "logging the trained model", after=kept):
            logger.flush()
            summary = write_outputs(name, model, progress, best, len(x_train), run_id, placement)
    except TrainingFailed as failure:
        with contextlib.suppress(Exception):
            mlflow.set_tags({"failure_reason": failure.reason, "failure_epoch": str(failure.epoch),
                             "failure_message": str(failure)[:5000]})
        tracking.end_run("FAILED")
        ckpt.clear()
        raise
    except BaseException as exc:  # the checkpoint stays: a rerun resumes this run
        tracking.end_run(tracking.interrupted_status(exc))
        raise
    with tracking.failures_named(uri, "ending the run", after=kept):
        mlflow.end_run()
    ckpt.clear()
    print(f"{name}: trained {summary['epochs']} epochs in {summary['train_seconds']:.1f} s; val accuracy "
          f"{summary['final_val_accuracy']:.4f}; MLflow run {run.info.run_id}")
    return summary


def write_outputs(name: str, model, progress, best, n_train: int, run_id: str,
                  placement: distribute.Placement = distribute.Placement()) -> dict:
    """Log the model, its summary and costs to the active run, then write the stage's outputs (each
    to a temporary name first, so a failure leaves none half-written). The outputs DVC hashes hold
    only what code, params and data decide; wall times and the machine go to classic_cnns.costs."""
    report_dir = paths.model_reports(name)
    history = progress.history
    learned = {k: v for k, v in history.items() if k != "epoch_seconds"}
    history_frame = pd.DataFrame({"epoch": range(1, progress.epochs + 1), **learned})
    summary = {"epochs": progress.epochs, "final_train_accuracy": history["accuracy"][-1],
               "final_val_accuracy": history["val_accuracy"][-1], "parameters": int(model.count_params())}
    if best:
        summary.update(best_epoch=best.best_epoch, stopped_early=best.stopped)
    cost = {"train_seconds": round(progress.seconds, 2),
            "train_images_per_second": round(n_train * progress.epochs / progress.seconds, 1),
            "epoch_seconds": [round(s, 2) for s in history.get("epoch_seconds", [])],
            "device": environment.device(), "devices": placement.devices, "processes": placement.processes,
            "keras_backend": keras.backend.backend(), **environment.peak_memory_mb()}
    tracking.log_keras_model(model)
    mlflow.log_text(history_frame.assign(epoch_seconds=history.get("epoch_seconds")).to_csv(index=False), "history.csv")
    mlflow.log_metrics({k: v for k, v in {**summary, **cost}.items() if isinstance(v, (int, float))})
    with tempfile.TemporaryDirectory() as tmp:  # its sha256 tags the run: evaluate finds the run by the file
        sha = outputs.save_keras_model(model, Path(tmp) / "model.keras")
        mlflow.set_tag(tracking.MODEL_SHA_TAG, sha)
        with outputs.atomic(paths.model_file(name)) as final:
            shutil.copyfile(Path(tmp) / "model.keras", final)
    outputs.write_csv(history_frame, report_dir / "history.csv", index=False)
    outputs.write_csv(layer_table(model), report_dir / "architecture.csv", index=False)
    outputs.write_json(report_dir / "training.json", summary)
    costs.write("train", name, cost)
    return {**summary, **cost}


def main(argv: list[str]) -> int:
    tracking.end_runs_on_sigterm()
    params = load_or_exit()
    if len(argv) != 1 or argv[0] not in params.models:
        print(f"usage: python -m stages.train {{{','.join(params.models)}}}", file=sys.stderr)
        return 2
    train(params, argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
