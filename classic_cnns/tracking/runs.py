"""A run's life in MLflow: how it is tagged (git commit, DVC experiment, machine, dataset), started
or resumed, and ended — FINISHED, FAILED with the reason a training failed, or KILLED by Ctrl-C or
SIGTERM (errors.run_stage turns it into an exception), never left RUNNING by a stage that stopped.

One run per trained model (its evaluation adds to it); the report and the claims grid have runs of
their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from classic_cnns import environment, errors
from classic_cnns.errors import TrainingFailed
from classic_cnns.tracking import store


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


PROCESS_TAG = "process"  # host/boot/pid/start of the process that has the run open (process_id())


def process_id(pid: int | None = None) -> str | None:
    """`host:boot:pid:start` of a live process (this one by default), None if it is gone: the boot id
    and the start time (clock ticks since boot) tell a process from a later one given the same pid."""
    pid = pid or os.getpid()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    start = stat[stat.rindex(")") + 2 :].split()[19]  # field 22, after the command name in parentheses
    return f"{socket.gethostname()}:{boot}:{pid}:{start}"


DISPATCH_TASK_ENV, DISPATCH_WORKER_ENV = "CLASSIC_CNNS_DISPATCH_TASK", "CLASSIC_CNNS_DISPATCH_WORKER"


def owned_tags() -> dict[str, str]:
    """What runs a run now (set whenever a stage opens one): host, pid, start, and process_id(); for a
    stage a Dask worker runs (classic_cnns/dispatch), the task and the worker."""
    return {
        PROCESS_TAG: process_id() or "",
        "process.host": socket.gethostname(),
        "process.pid": str(os.getpid()),
        "process.started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **({"dispatch.task": os.environ[DISPATCH_TASK_ENV]} if os.environ.get(DISPATCH_TASK_ENV) else {}),
        **({"dispatch.worker": os.environ[DISPATCH_WORKER_ENV]} if os.environ.get(DISPATCH_WORKER_ENV) else {}),
    }


def end_earlier_attempts(experiment_id: str, task: str, worker: str) -> list[str]:
    """End KILLED the runs an earlier attempt at this Dask task left RUNNING. Dask runs a task again
    only once the worker that had it is gone (a machine down, a killed worker), which no process
    check on this host can see. Returns the ids of the runs ended."""
    client = mlflow.MlflowClient()
    running = client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.`dispatch.task` = '{task}'", max_results=200
    )
    for run in running:
        lost = run.data.tags.get("dispatch.worker", "?")
        reason = (
            f"its Dask worker ({lost}, on {run.data.tags.get('process.host')}) was lost mid-stage; "
            f"the stage ran again on worker {worker}"
        )
        client.set_tag(run.info.run_id, "killed_reason", reason)
        client.set_terminated(run.info.run_id, "KILLED")
        print(f"MLflow run {run.info.run_id} ({run.info.run_name}) ended KILLED: {reason}")
    return [run.info.run_id for run in running]


def end_orphans(experiment_id: str) -> None:
    """End KILLED the runs of this host left RUNNING by a process that is gone (kill -9, a machine
    that went down, a queued experiment's workspace thrown away with its checkpoint), naming why.
    A run that a live process holds, or one of another host (which this one cannot see), is left."""
    client = mlflow.MlflowClient()
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.`process.host` = '{host}'", max_results=200
    )
    for run in running:
        owner = run.data.tags.get(PROCESS_TAG, "")
        pid = owner.split(":")[2] if owner.count(":") == 3 else ""
        if not pid.isdigit() or process_id(int(pid)) == owner:
            continue
        reason = (
            f"its process ({run.data.tags.get('process.host')}, pid {pid}, started "
            f"{run.data.tags.get('process.started')}) is gone without ending it (killed, e.g. kill -9)"
        )
        client.set_tag(run.info.run_id, "killed_reason", reason)
        client.set_terminated(run.info.run_id, "KILLED")
        print(f"MLflow run {run.info.run_id} ({run.info.run_name}) ended KILLED: {reason}")


def interrupted_status(exc: BaseException) -> str:
    """The MLflow status for a run ended by `exc`: KILLED for Ctrl-C or SIGTERM, else FAILED."""
    return "KILLED" if errors.is_interruption(exc) else "FAILED"


def dataset_tags(meta: dict) -> dict[str, str]:
    prov = meta["provenance"]
    return {
        "dataset": meta["dataset"],
        "dataset_title": prov["title"],
        "dataset_official": str(prov["official"]).lower(),
        **{f"dataset_sha256.{f}": s for f, s in prov["files"].items()},
    }


def logged_epochs(run_id: str) -> int:
    """The last epoch whose metrics the run holds (0 for none)."""
    return max((m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "loss")), default=0)


def end_run(status: str = "FINISHED") -> None:
    """End the active run; after a failure the store may be the thing that failed: then the run
    stays RUNNING in it (no stall, no second error)."""
    with contextlib.suppress(Exception):
        mlflow.end_run(status=status)


def model_name(name: str, dataset: str) -> str:
    """A model's name in MLflow (its runs and registered model): `<model>-<dataset>`, e.g.
    lenet5-mnist, or the model's own name where it already ends with its dataset (lenet5-fashion)."""
    return name if name == dataset or name.endswith(f"-{dataset}") else f"{name}-{dataset}"


def start_training_run(name: str, cfg, meta: dict, logged_params: dict, resume_id: str | None):
    """Continue the MLflow run of a resumed checkpoint, or start a new, fully tagged one; either
    way tagged with the process that now runs it (owned_tags)."""
    if resume_id:
        try:
            run = mlflow.start_run(run_id=mlflow.get_run(resume_id).info.run_id)
        except MlflowException:
            print(f"{name}: the checkpoint's MLflow run {resume_id} is not in this store; starting a new run")
        else:
            mlflow.set_tags(owned_tags())
            with contextlib.suppress(MlflowException):  # ended KILLED while its process was gone
                mlflow.delete_tag("killed_reason")
            return run
    exp = os.environ.get("DVC_EXP_NAME")
    run = mlflow.start_run(run_name=model_name(name, cfg.dataset) + (f" ({exp})" if exp else ""))
    mlflow.log_params(logged_params)
    mlflow.set_tags(
        {
            **run_tags(),
            **environment.describe(),
            **owned_tags(),
            "model": name,
            "architecture": cfg.architecture,
            **dataset_tags(meta),
        }
    )
    log_dataset(meta, "training")
    return run


def log_dataset(meta: dict, context: str) -> None:
    """The prepared dataset as the active run's input (MLflow's Datasets): name, where its files came
    from, a digest of their sha256s, split sizes, whether they are the official files."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    from classic_cnns.data.datasets import REGISTRY

    prov = meta["provenance"]
    known = REGISTRY.get(meta["dataset"])
    where = known.urls[0] if prov["official"] and known and known.urls else prov["source"]
    source = HTTPDatasetSource(where) if "://" in where else LocalArtifactDatasetSource(where)
    digest = hashlib.sha256(json.dumps(prov["files"], sort_keys=True).encode()).hexdigest()[:32]
    sizes = {f"{split}_images": str(n) for split, n in meta.get("sizes", {}).items()}
    dataset = MetaDataset(source, name=f"{meta['dataset']}", digest=digest)
    try:
        mlflow.log_input(dataset, context=context, tags={"title": prov["title"], **sizes})
    except MlflowException as err:
        # Two runs that log the same new dataset at once (`dvc queue start -j 2`) race in MLflow's
        # store: it looks the dataset up, then inserts it, and the slower run's insert breaks the
        # unique key. Its transaction rolls back whole; a second try finds the dataset and links it.
        if "unique" not in str(err).lower():
            raise
        mlflow.log_input(dataset, context=context, tags={"title": prov["title"], **sizes})


def abandon(run_id: str | None, reason: str) -> None:
    """End a run that will not be resumed (KILLED, tagged with why), if the store has it RUNNING."""
    if not run_id:
        return
    client = mlflow.MlflowClient()
    with store.failures_named(store.tracking_uri(), "ending an abandoned run"):
        try:
            run = client.get_run(run_id)
        except MlflowException:
            return  # logged to another store
        if run.info.status == "RUNNING":
            client.set_tag(run_id, "abandoned_reason", reason)
            client.set_terminated(run_id, "KILLED")
            print(f"MLflow run {run_id} ended (KILLED): {reason}")


@contextlib.contextmanager
def training_run(name: str, cfg, meta: dict, logged_params: dict, resume_id: str | None, kept: str = ""):
    """The MLflow run of a training, start to end; yields (run, the last epoch it already holds).
    A TrainingFailed ends it FAILED with the failure's reason, epoch and message; Ctrl-C or SIGTERM
    KILLED; any other exception FAILED (the store may be what failed: then the run stays RUNNING).
    `kept`: what a failure of the store at the end leaves behind, told to the user."""
    uri = store.tracking_uri()
    try:
        with store.failures_named(uri, "starting the run"):
            run = start_training_run(name, cfg, meta, logged_params, resume_id)
            logged = logged_epochs(run.info.run_id) if resume_id else 0
    except BaseException as exc:  # stopped while starting: not left to MLflow's exit hook, which ends it FINISHED
        end_run(interrupted_status(exc))
        raise
    try:
        yield run, logged
    except TrainingFailed as failure:
        with contextlib.suppress(Exception):
            mlflow.set_tags(
                {
                    "failure_reason": failure.reason,
                    "failure_epoch": str(failure.epoch),
                    "failure_message": str(failure)[:5000],
                }
            )
        end_run("FAILED")
        raise
    except BaseException as exc:
        end_run(interrupted_status(exc))
        raise
    with store.failures_named(uri, "ending the run", after=kept):
        mlflow.end_run()
