"""MLflow wiring: where runs go, how a run is tagged, per-epoch logging, the model registry.

One run per trained model (its evaluation adds to it); the report and the claims grid have runs of
their own. A registered model's `champion` alias points at the newest full-quality version: one
trained by `dvc repro` in the workspace (not a DVC experiment) on the whole dataset.

Faults cost seconds: a tracking server is asked for /health before any work; MLflow's HTTP client
gives up on a request after 2 retries and 10 s (its defaults, 7 retries with growing backoff and
120 s, stall a stage for minutes; set the MLFLOW_HTTP_REQUEST_* variables to change them); epochs a
server did not take are logged once it answers again. A new SQLite store is created under a file
lock, so concurrent experiments do not run MLflow's schema migrations at the same time (MLflow
itself gives every later SQLite session a 20 s busy timeout).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import mlflow

from classic_cnns.paths import project_root
from classic_cnns.errors import UserError

# MLflow's own INFO lines (creating tables, "Registered model ...") repeat what the stages print.
logging.getLogger("mlflow").setLevel(logging.WARNING)
for _key, _value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}.items():
    os.environ.setdefault(_key, _value)


class TrackingUnavailable(UserError):
    pass


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite file at the project root (absolute URI)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_server(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) tracking URI must answer within seconds (any HTTP answer below 500 will do)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s)  # noqa: S310 (http(s) checked)
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    else:
        return
    raise TrackingUnavailable(f"the MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer ({reason}): "
                              "start it, or unset MLFLOW_TRACKING_URI to log to the project's mlflow.db")


@contextlib.contextmanager
def store_lock(uri: str):
    """For a SQLite store, an exclusive lock on <db>.lock: MLflow creates and migrates the schema of
    a new database on first use, and two processes doing so at once break it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def use_store(experiment: str) -> None:
    """Point MLflow at the store and experiment, checked first. With the default SQLite store, a
    new experiment keeps its artifacts in <root>/mlruns (not the current folder, which for a temp
    experiment is deleted afterwards)."""
    uri = tracking_uri()
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri), failures_named(uri, "opening it"):
        if not os.environ.get("MLFLOW_TRACKING_URI") and mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=(project_root() / "mlruns").as_uri())
        mlflow.set_experiment(experiment)


@contextlib.contextmanager
def failures_named(uri: str, doing: str, after: str = ""):
    """Turn a tracking store's failure inside the block into one TrackingUnavailable line."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except TrackingUnavailable as exc:  # from a block inside this one
        if after:
            raise TrackingUnavailable(f"{exc}{after}") from exc
        raise
    except (MlflowException, requests.exceptions.RequestException, OSError) as exc:
        raise TrackingUnavailable(f"the MLflow tracking store {uri} failed while {doing} ({short_reason(exc)}){after}") from exc


def short_reason(exc: BaseException) -> str:
    """What MLflow's long HTTP errors come down to."""
    text = str(exc)
    for marker, reason in (("Failed to establish a new connection", "connection refused"),
                           ("Read timed out", "no answer in time"), ("Max retries exceeded", "no answer")):
        if marker in text:
            return reason
    return text.splitlines()[0][:200] if text else type(exc).__name__


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


def logged_epochs(run_id: str) -> int:
    """The last epoch whose metrics the run holds (0 for none)."""
    return max((m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "loss")), default=0)


def end_run(status: str = "FINISHED") -> None:
    """End the active run; after a failure the store may be the thing that failed: then the run
    stays RUNNING in it (no stall, no second error)."""
    with contextlib.suppress(Exception):
        mlflow.end_run(status=status)


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

    from mlflow.exceptions import MlflowException

    if resume_id:
        try:
            return mlflow.start_run(run_id=mlflow.get_run(resume_id).info.run_id)
        except MlflowException:
            print(f"{name}: the checkpoint's MLflow run {resume_id} is not in this store; starting a new run")
    run = mlflow.start_run(run_name=f"{name}-{cfg.dataset}")
    mlflow.log_params(logged_params)
    mlflow.set_tags({**run_tags(), **environment.describe(), "model": name, "architecture": cfg.architecture,
                     **dataset_tags(meta)})
    return run


MODEL_SHA_TAG = "model_sha256"


def training_run_of(experiment: str, model_sha256: str):
    """The newest run of `experiment` that trained this model file (byte for byte), or None: the
    model files are written byte-stable, so the file names its run without a run id on disk."""
    found = mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1,
                               filter_string=f"tags.{MODEL_SHA_TAG} = '{model_sha256}'",
                               order_by=["attributes.start_time DESC"])
    return found[0] if found else None


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
