"""One attempt at a dispatched stage, in a worker's workspace at the submitted commit (the Dask task,
classic_cnns/dispatch/task.py, starts it there):

    python -m classic_cnns.dispatch.attempt STAGE

1. Gets what the stage reads: the outputs of the stages before it are pulled from the DVC remote, as
   the commit's dvc.lock records them or, for stages dispatched before this one, as the dvc.lock
   entries the task wrote here from their results say (their uncached outputs came with those
   results). Anything still missing is one line and exit 3, before any training.
2. Ends KILLED the MLflow runs an earlier attempt at this task left RUNNING (its worker was lost).
3. `dvc repro --pull --single-item STAGE`: a stage that an earlier attempt finished and pushed is
   restored from the remote's run-cache, not rerun.
4. `dvc push --run-cache STAGE`: its outputs and its run, for the stages after it and the submitting
   clone. A push cut off fails the attempt with exit 75, and Dask tries again (the next attempt
   finds the stage in its workspace's run-cache, restores it and pushes).
5. Writes .dvc/tmp/dispatch-result.json: the stage's dvc.lock entry and whether it ran here.

It runs in a process group of its own; if the worker that started it dies, it stops the stage with
SIGTERM (the stage then ends its MLflow run KILLED) and exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from classic_cnns.dispatch.task import RESULT, lock_file

NO_DATA = 3
PUSH_FAILED = 75  # EX_TEMPFAIL: a push cut off; Dask's next attempt pushes again (the stage is restored)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m classic_cnns.dispatch.attempt STAGE", file=sys.stderr)
        return 2
    (stage,) = argv
    worker = os.environ.get("CLASSIC_CNNS_DISPATCH_WORKER", "?")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        print(
            "error: no MLFLOW_TRACKING_URI here: the runs would stay in this workspace; start the worker with "
            "the team's tracking server in MLFLOW_TRACKING_URI",
            file=sys.stderr,
        )
        return 2
    stop_with_parent()
    if missing := missing_data(stage):
        print(f"error: {missing}", file=sys.stderr)
        return NO_DATA
    end_earlier_attempts(worker)
    repro = dvc("repro", "--pull", "--single-item", stage)
    if repro.returncode != 0:
        return repro.returncode
    pushed = dvc("push", "--run-cache", stage)
    # a run-cache entry that did not upload is only logged, and the push exits 0 (DVC's run-cache
    # transfer logs each failure and goes on: dvc/stage/cache.py); without it the submitting clone
    # cannot restore the stage, so it is a push cut off too
    if pushed.returncode != 0 or "failed to transfer" in pushed.stderr:
        return PUSH_FAILED
    ran = f"Running stage '{stage}'" in repro.stdout
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({"lock": lock_entry(stage), "ran": ran}))
    return 0


def stop_with_parent() -> None:
    """If the worker that started this attempt dies (kill -9, a lost machine's last gasp), SIGTERM this
    process group: the stage ends its MLflow run KILLED and nothing half-made is recorded."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(os.getpgrp(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def end_earlier_attempts(worker: str) -> None:
    task = os.environ.get("CLASSIC_CNNS_DISPATCH_TASK")
    if not task:
        return
    import mlflow

    from classic_cnns.params import load_or_exit
    from classic_cnns.tracking import runs, store

    params = load_or_exit()
    store.use_store(params.mlflow.experiment)
    experiment = mlflow.get_experiment_by_name(params.mlflow.experiment)
    runs.end_earlier_attempts(experiment.experiment_id, task, worker)


def missing_data(stage: str) -> str | None:
    """Pull what the stage reads from the DVC remote (outputs of the stages before it: from the commit's
    dvc.lock, or for stages dispatched before it, from the dvc.lock entries the task wrote here); what
    is still missing, in words, or None."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo() as repo:
        (target,) = repo.stage.collect(stage)
        before = [s.addressing for s in repo.index.graph.successors(target)]
        try:
            if before:
                repo.pull(targets=before, allow_missing=True)
        except DvcException as exc:
            return f"cannot pull what {stage} reads from the DVC remote ({exc})"
        missing = [dep.def_path for dep in target.deps if not os.path.exists(dep.fs_path)]
    if not missing:
        return None
    many = len(missing) > 1
    return (
        f"{', '.join(missing)} {'are' if many else 'is'} neither in this workspace nor on the DVC remote: "
        f"push {'them' if many else 'it'} from where {'they were' if many else 'it was'} made "
        f"(`dvc push {' '.join(before) or stage}`), or give this worker the remote"
    )


def dvc(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    print(done.stdout, end="", flush=True)
    print(done.stderr, end="", file=sys.stderr, flush=True)
    return done


def lock_entry(stage: str) -> dict:
    """The stage's entry in the dvc.lock beside its dvc.yaml."""
    import yaml

    return yaml.safe_load(lock_file(stage).read_text())["stages"][stage.rpartition(":")[2]]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
