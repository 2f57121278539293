"""The Dask task: one DVC stage, run on a worker in a workspace of its own (a clone of the project,
kept between tasks with its DVC cache) at the submitted commit, by `python -m
classic_cnns.dispatch.attempt` there. Sent to the workers by value (cloudpickle), so a worker needs the
project's Python environment and git, not this code.

Where a worker's workspace is: CLASSIC_CNNS_WORKSPACE (one folder, for one worker), else
CLASSIC_CNNS_WORKSPACES/<worker name> (a folder of them), else classic-cnns/ in the worker's local
directory. One stage at a time per workspace (a lock file beside it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

WORKSPACE_ENV, WORKSPACES_ENV = "CLASSIC_CNNS_WORKSPACE", "CLASSIC_CNNS_WORKSPACES"
RESULT = Path(".dvc/tmp/dispatch-result.json")  # what the attempt leaves for the task to return
COSTS = Path("reports/costs")  # cost records: not DVC outputs, returned with the result


class StageFailed(Exception):
    """An attempt that may succeed if tried again (a push cut off): Dask retries the task."""


RETRY = 75  # attempt.py's exit status for a push cut off; any other failure is final, in one line


def run_stage(job: dict, step: dict, *upstream: dict) -> dict:
    """Run `step` (a stage of the plan) in this worker's workspace; return where and how it ran, its
    dvc.lock entry, its uncached outputs and its cost records, or `failed`: why, in one line."""
    from distributed import get_worker

    worker = get_worker()
    name = str(worker.name)
    workspace = workspace_of(name, worker.local_directory)
    started = time.time()
    with locked(workspace):
        if problem := checkout(workspace, job):
            return {"stage": step["stage"], "failed": f"worker {name}: {problem}"}
        costs_before = snapshot(workspace / COSTS)
        (workspace / RESULT).unlink(missing_ok=True)
        host = socket.gethostname()
        address_host = urlparse(worker.address).hostname  # as the submitter counts the workers per host
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "CLASSIC_CNNS_DISPATCH_TASK": f"{job['id']}/{step['stage']}",
            "CLASSIC_CNNS_DISPATCH_WORKER": name,
            "CLASSIC_CNNS_CONCURRENT_CELLS": str(job["workers_per_host"].get(address_host, 1)),
        }
        for done in upstream:
            bring(workspace, done)
        attempt = subprocess.run(
            [sys.executable, "-m", "classic_cnns.dispatch.attempt", step["stage"]],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            start_new_session=True,  # its own group: it ends the stage itself if this worker dies
        )
        if attempt.returncode != 0:
            why = f"{step['stage']} on worker {name}: {last_error(attempt.stdout + attempt.stderr)}"
            if attempt.returncode == RETRY:
                raise StageFailed(why)
            return {"stage": step["stage"], "failed": why}
        made = json.loads((workspace / RESULT).read_text())
        costs_after = snapshot(workspace / COSTS)
    return {
        **made,
        "stage": step["stage"],
        "worker": name,
        "host": host,
        "seconds": round(time.time() - started, 2),
        "outputs": {path: (workspace / path).read_text() for path in step["uncached"]},
        "costs": {f"{COSTS}/{k}": v for k, v in costs_after.items() if costs_before.get(k) != v},
        "log": attempt.stdout[-4000:],
    }


def workspace_of(name: str, local_directory: str) -> Path:
    if os.environ.get(WORKSPACE_ENV):
        return Path(os.environ[WORKSPACE_ENV]).resolve()
    if os.environ.get(WORKSPACES_ENV):
        return (Path(os.environ[WORKSPACES_ENV]) / name).resolve()
    return Path(local_directory) / "classic-cnns"


@contextlib.contextmanager
def locked(workspace: Path):
    workspace.parent.mkdir(parents=True, exist_ok=True)
    with open(workspace.parent / f".{workspace.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def checkout(workspace: Path, job: dict) -> str | None:
    """The submitted commit's files in the workspace (DVC's cache and outputs stay: git ignores them;
    tracked files are reset to the commit); what went wrong, or None."""
    if not (workspace / ".git").exists():
        workspace.mkdir(parents=True, exist_ok=True)
        git("init", "-q", cwd=workspace)
    fetched = git("fetch", "-q", job["git"], job["commit"], cwd=workspace)
    if fetched.returncode != 0:
        return (
            f"cannot fetch commit {job['commit'][:12]} from {job['git']} ({last_error(fetched.stderr)}): push it there"
        )
    done = git("checkout", "-q", "-f", "--detach", job["commit"], cwd=workspace)
    return f"git checkout in {workspace}: {last_error(done.stderr)}" if done.returncode else None


def lock_file(stage: str) -> Path:
    """The dvc.lock beside the dvc.yaml that defines `stage` (an address such as
    ablations/dvc.yaml:cell@alexnet-1, or prepare@mnist for ./dvc.yaml)."""
    dvcfile = stage.rpartition(":")[0] or "dvc.yaml"
    return Path(dvcfile).with_name("dvc.lock")


def bring(workspace: Path, done: dict) -> None:
    """A stage dispatched before this one, as its result says: its uncached outputs written here and
    its dvc.lock entry (as DVC wrote it on that worker) added to this workspace's dvc.lock, so its
    cached outputs can be pulled and DVC sees it as run."""
    import yaml

    for path, text in done["outputs"].items():
        (workspace / path).parent.mkdir(parents=True, exist_ok=True)
        (workspace / path).write_text(text)
    lock = workspace / lock_file(done["stage"])
    entries = yaml.safe_load(lock.read_text()) if lock.exists() else {"schema": "2.0", "stages": {}}
    entries.setdefault("stages", {})[done["stage"].rpartition(":")[2]] = done["lock"]
    lock.write_text(yaml.safe_dump(entries, sort_keys=False))


def snapshot(folder: Path) -> dict[str, str]:
    return {f.name: f.read_text() for f in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def last_error(text: str) -> str:
    """The line that says what went wrong: the last `error:`/`ERROR:` line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    last = (errors or lines or ["no output"])[-1]
    return last.split(":", 1)[1].strip() if last.lower().startswith("error:") else last
