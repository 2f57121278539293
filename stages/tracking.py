"""MLflow wiring: where runs go, and how a run is tagged. One run per trained model."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import mlflow


def project_root() -> Path:
    """The project's root, also from inside a `dvc exp run --temp` / queued copy (which lives in
    <root>/.dvc/tmp/exps/...), so every experiment logs to the same store."""
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


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
