"""What a training leaves: models/<name>/model.keras (byte-stable: its sha256 tags the MLflow run,
which `evaluate` finds by it), reports/<name>/history.csv (per-epoch loss and accuracy, a DVC plot),
architecture.csv (the layer table) and training.json (epochs, final accuracies, parameters); the wall
times, throughput, memory and device go to reports/costs/train-<name>.json, which DVC does not hash.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras
import mlflow
import pandas as pd

from classic_cnns import costs, environment, outputs, paths
from classic_cnns.model.networks import layer_table
from classic_cnns.tracking import registry
from classic_cnns.training.distribute import Placement

SETTINGS = ("parameters", "devices", "processes", "stopped_early", "precision")  # what a run was, not what it measured


def log_summary(summary: dict, cost: dict) -> None:
    """Results as metrics at the last epoch's step (beside the per-epoch curves); what the run was
    (parameter count, devices, processes, early stop) as tags."""
    numbers = {k: v for k, v in {**summary, **cost}.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics({k: v for k, v in numbers.items() if k not in SETTINGS}, step=summary["epochs"])
    mlflow.set_tags({k: str({**summary, **cost}[k]) for k in SETTINGS if k in {**summary, **cost}})


def write_outputs(
    name: str, model, progress, best, n_train: int, placement: Placement = Placement(), about: dict | None = None
) -> dict:
    """Log the model, its summary and costs to the active run, then write the stage's outputs (each
    to a temporary name first, so a failure leaves none half-written). The outputs DVC hashes hold
    only what code, params and data decide; wall times and the machine go to classic_cnns/costs.py,
    with `about` (what the model is: classic_cnns/reporting/costs_page.py's identity)."""
    report_dir = paths.model_reports(name)
    history = progress.history
    learned = {k: v for k, v in history.items() if k != "epoch_seconds"}
    history_frame = pd.DataFrame({"epoch": range(1, progress.epochs + 1), **learned})
    summary = {
        "epochs": progress.epochs,
        "final_train_accuracy": history["accuracy"][-1],
        "final_val_accuracy": history["val_accuracy"][-1],
        "parameters": int(model.count_params()),
    }
    if best:
        summary.update(best_epoch=best.best_epoch, stopped_early=best.stopped)
    cost = {
        "train_seconds": round(progress.seconds, 2),
        "train_images_per_second": round(n_train * progress.epochs / progress.seconds, 1),
        "epoch_seconds": [round(s, 2) for s in history.get("epoch_seconds", [])],
        "device": environment.device(),
        "devices": placement.devices,
        "processes": placement.processes,
        "keras_backend": keras.backend.backend(),
        "precision": keras.mixed_precision.global_policy().compute_dtype,  # what it computed in (auto: here)
        **environment.peak_memory_mb(),
        **(about or {}),
    }
    mlflow.log_text(history_frame.assign(epoch_seconds=history.get("epoch_seconds")).to_csv(index=False), "history.csv")
    log_summary(summary, cost)
    with tempfile.TemporaryDirectory() as tmp:  # its sha256 tags the run: evaluate finds the run by the file
        sha = outputs.save_keras_model(model, Path(tmp) / "model.keras")
        mlflow.set_tag(registry.MODEL_SHA_TAG, sha)
        registry.log_keras_model(model, Path(tmp) / "model.keras")
        with outputs.atomic(paths.model_file(name)) as final:
            shutil.copyfile(Path(tmp) / "model.keras", final)
    outputs.write_csv(history_frame, report_dir / "history.csv", index=False)
    outputs.write_csv(layer_table(model), report_dir / "architecture.csv", index=False)
    outputs.write_json(report_dir / "training.json", summary)
    costs.write("train", name, cost)
    return {**summary, **cost}
