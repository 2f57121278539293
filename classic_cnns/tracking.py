"""MLflow wiring: where runs go, how a run is tagged, per-epoch logging, the model registry.

One run per trained model (its evaluation adds to it); the report and the claims grid have runs of
their own. A registered model's `champion` alias points at the newest full-quality version: one
trained by `dvc repro` in the workspace (not a DVC experiment) on the whole dataset.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess

import keras
import mlflow

from classic_cnns.data import project_root

# MLflow's own INFO lines (creating tables, "Registered model ...") repeat what the stages print.
logging.getLogger("mlflow").setLevel(logging.WARNING)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite file at the project root (absolute URI)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def use_store(experiment: str) -> None:
    """Point MLflow at the store and experiment. With the default SQLite store, a new experiment
    keeps its artifacts in <root>/mlruns (not the current folder, which for a temp experiment
    is deleted afterwards)."""
    mlflow.set_tracking_uri(tracking_uri())
    if not os.environ.get("MLFLOW_TRACKING_URI") and mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(project_root() / "mlruns").as_uri())
    mlflow.set_experiment(experiment)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags() -> dict[str, str]:
    tags = {"git_commit": git_commit()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


class Terminated(SystemExit):
    """SIGTERM (`kill`, a CI timeout, a scheduler), raised in the main thread like Ctrl-C."""


def end_runs_on_sigterm() -> None:
    """Make SIGTERM raise Terminated, so the stage's MLflow run is ended (KILLED) instead of being
    left RUNNING forever; exit status 143, as if killed by the signal."""
    def handler(signum, frame):
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def interrupted_status(exc: BaseException) -> str:
    """The MLflow status for a run ended by `exc`: KILLED for Ctrl-C or SIGTERM, else FAILED."""
    return "KILLED" if isinstance(exc, (KeyboardInterrupt, Terminated)) else "FAILED"


def dataset_tags(meta: dict) -> dict[str, str]:
    prov = meta["provenance"]
    return {"dataset": meta["dataset"], "dataset_title": prov["title"], "dataset_official": str(prov["official"]).lower(),
            **{f"dataset_sha256.{f}": s for f, s in prov["files"].items()}}


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics (as loop.Progress recorded them) to the active MLflow run."""

    def __init__(self, progress):
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None):
        mlflow.log_metrics(self.progress.last, step=epoch + 1)


CHAMPION = "champion"


def register(model_name: str, run_id: str, test_accuracy: float, full_quality: bool) -> None:
    """A new version of the registered model, its test accuracy as a tag; a full-quality run's
    version also takes the `champion` alias (load it as models:/<name>@champion)."""
    version = mlflow.register_model(f"runs:/{run_id}/model", model_name)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(model_name, version.version, "test_accuracy", f"{test_accuracy:.4f}")
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        client.set_model_version_tag(model_name, version.version, "dvc_exp_name", exp)
    client.update_model_version(model_name, version.version,
                                description=f"test accuracy {test_accuracy:.4f} (run {run_id})")
    if full_quality:
        client.set_registered_model_alias(model_name, CHAMPION, version.version)
    print(f"registered {model_name} version {version.version}"
          + (f" as @{CHAMPION}" if full_quality else " (not full-quality: the champion alias stays where it was)"))


def is_full_quality(meta: dict) -> bool:
    """Trained in the workspace (not a DVC experiment) on the whole prepared dataset."""
    return not os.environ.get("DVC_EXP_NAME") and not meta.get("subset", False)


def start_training_run(name: str, cfg, meta: dict, logged_params: dict, resume_id: str | None):
    """Continue the MLflow run of a resumed checkpoint, or start a new, fully tagged one."""
    from classic_cnns import environment

    if resume_id and mlflow.get_run(resume_id) is not None:
        return mlflow.start_run(run_id=resume_id)
    run = mlflow.start_run(run_name=f"{name}-{cfg.dataset}")
    mlflow.log_params(logged_params)
    mlflow.set_tags({**run_tags(), **environment.describe(), "model": name, "architecture": cfg.architecture,
                     **dataset_tags(meta)})
    return run


def log_keras_model(model) -> None:
    """The model as the run's `model` artifact, with a signature and the packages it needs."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from classic_cnns import environment

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, *model.input_shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, model.output_shape[-1]))]))
    requirements = [f"{pkg}=={ver}" for pkg, ver in environment.package_versions().items()
                    if pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "numpy")]
    mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=requirements)
