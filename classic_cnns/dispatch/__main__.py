"""python -m classic_cnns.dispatch TARGET... (--workers N | --scheduler ADDRESS) [--git URL]

Runs every stale stage of the TARGETs (dvc.yaml files or stages, as `dvc repro` takes them) on Dask
workers, then brings the results back here through DVC and runs `dvc repro TARGET...`, which trains
nothing the workers ran. Run it in the project's root, with the work committed (the workers check out
this commit) and a default DVC remote the workers and this clone share.

  --workers N          a LocalCluster of N workers on this machine, each in its own workspace under
                       .dvc/tmp/dispatch/ (on a GPU, each gets 1/N of its memory)
  --scheduler ADDRESS  the workers of a running Dask scheduler (`dask scheduler`, `dask worker ADDRESS`,
                       started in a workspace of their own each: see task.py); they fetch the commit
                       from --git (default: this clone's `origin`)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from classic_cnns.dispatch import plan as planning
from classic_cnns.dispatch import task

RETRIES = 2  # more attempts at a stage whose push was cut off (a lost worker's stage is rerun anyway)


class DispatchError(Exception):
    """What stops a dispatch, in one line."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m classic_cnns.dispatch", description=__doc__.split("\n\n")[1])
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workers", type=int, metavar="N", help="a LocalCluster of N workers here")
    where.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler's address (tcp://host:8786)")
    parser.add_argument("--git", metavar="URL", help="where the workers fetch the commit (default: origin)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be 1 or more")
    try:
        return dispatch(args)
    except DispatchError as exc:
        print(f"error: dispatch: {exc}", file=sys.stderr)
        return 2


def dispatch(args) -> int:
    commit = committed_work()
    git_url = args.git or (str(Path.cwd()) if args.workers else origin())
    default_remote()
    steps = planning.plan(args.targets)
    remote = [s for s in steps if not s.here]
    print(
        f"{len(steps)} stage(s) to run: {len(remote)} on Dask workers, {len(steps) - len(remote)} here after them",
        flush=True,
    )
    started = time.time()
    if remote:
        with connected(args) as client:
            hosts = [urlparse(address).hostname for address in client.scheduler_info()["workers"]]
            job = {
                "id": uuid.uuid4().hex[:12],
                "git": git_url,
                "commit": commit,
                "workers_per_host": {h: hosts.count(h) for h in set(hosts)},
            }
            print(f"{len(hosts)} worker(s); commit {commit[:12]} from {git_url}", flush=True)
            results = run_all(client, job, remote)
        bring_back(remote, results)
    final = dvc("repro", *args.targets)
    here = [line for line in final.stdout.splitlines() if line.startswith("Running stage")]
    print(f"dvc repro here: {len(here)} stage(s) ran here; all done in {time.time() - started:.0f} s")
    return 0


def committed_work() -> str:
    """The commit the workers check out; the tracked files here must be that commit's."""
    changed = git("status", "--porcelain", "--untracked-files=no").stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    if changed:
        raise DispatchError(
            f"uncommitted changes ({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}): the workers run "
            "a commit; commit them first"
        )
    return git("rev-parse", "HEAD").stdout.strip()


def origin() -> str:
    found = git("remote", "get-url", "origin", check=False)
    if found.returncode != 0:
        raise DispatchError(
            "no git remote 'origin' for the workers to fetch the commit from: add one, or pass --git URL"
        )
    return found.stdout.strip()


def default_remote() -> None:
    if not dvc("remote", "default", echo=False, check=False).stdout.strip():
        raise DispatchError(
            "no default DVC remote: the workers send their results through one (`dvc remote add -d NAME URL`)"
        )


class ByValue:
    """A function that travels by value (cloudpickle), for workers that have this project's Python
    environment but not its code: Dask pickles what it can import by reference."""

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)

    def __reduce__(self):
        import cloudpickle

        cloudpickle.register_pickle_by_value(task)
        return cloudpickle.loads, (cloudpickle.dumps(self.function),)


@contextlib.contextmanager
def connected(args):
    from distributed import Client, LocalCluster

    if args.workers:
        env = {
            task.WORKSPACES_ENV: str(Path(".dvc/tmp/dispatch").resolve()),
            # the workers log to this clone's store (or server), not to one in each workspace
            "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}",
        }
        if shutil.which("nvidia-smi"):  # one GPU shared by N workers: a share of its memory each
            env |= {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / args.workers:.3f}", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
        with LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # a failed stage is one line (below), not Dask's log of it
            env=env,
        ) as cluster, Client(cluster) as client:  # fmt: skip
            yield client
        return
    try:
        client = Client(args.scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise DispatchError(
            f"cannot reach the Dask scheduler at {args.scheduler} ({exc}): start it (`dask scheduler`) and its "
            "workers, or run here with --workers N"
        ) from None
    with client:
        if not client.scheduler_info()["workers"]:
            raise DispatchError(f"the Dask scheduler at {args.scheduler} has no workers: start some (`dask worker`)")
        yield client


def run_all(client, job: dict, steps: list[planning.Step]) -> dict[str, dict]:
    """Submit each step once its upstream steps are submitted (Dask starts it once they finish);
    report each as it finishes; the first failure cancels the rest."""
    from distributed import as_completed

    run_stage = ByValue(task.run_stage)
    futures = {}
    for step in steps:
        upstream = [futures[u] for u in step.upstream]
        key = f"{step.stage}-{job['id']}"
        futures[step.stage] = client.submit(
            run_stage, job, step.asdict(), *upstream, key=key, pure=False, retries=RETRIES
        )
    results = {}
    for future in as_completed(list(futures.values())):
        try:
            done = future.result()
        except Exception as exc:  # StageFailed RETRIES + 1 times, or Dask's own (a task whose workers all died)
            client.cancel(list(futures.values()))
            raise DispatchError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        if "failed" in done:
            client.cancel(list(futures.values()))
            raise DispatchError(done["failed"])
        how = "ran" if done["ran"] else "restored from the run-cache"
        print(
            f"{done['stage']}: {how} on worker {done['worker']} ({done['host']}) in {done['seconds']:.1f} s", flush=True
        )
        results[done["stage"]] = done
    return results


def bring_back(steps: list[planning.Step], results: dict[str, dict]) -> None:
    """The workers' results, here: stages with cached outputs restored from the DVC remote's run-cache;
    uncached outputs written from the results and recorded by `dvc commit`, whose dvc.lock entries
    must be the workers'; the cost records written."""
    cached = [s.stage for s in steps if not s.uncached]
    if cached:
        restored = dvc("repro", "--pull", "--single-item", *cached)
        if ran := [line for line in restored.stdout.splitlines() if line.startswith("Running stage")]:
            raise DispatchError(f"not in the DVC remote's run-cache, so run here: {'; '.join(ran)}")
    uncached = [s for s in steps if s.uncached]
    for step in uncached:
        for path, text in results[step.stage]["outputs"].items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    if uncached:
        dvc("commit", "--force", *[s.stage for s in uncached])
        for step in uncached:
            here = task_lock_entry(step.stage)
            if here != results[step.stage]["lock"]:
                raise DispatchError(
                    f"{step.stage}: the dvc.lock entry made here differs from worker "
                    f"{results[step.stage]['worker']}'s: its inputs differ there (`dvc status` on both)"
                )
    for done in results.values():
        for path, text in done["costs"].items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)


def task_lock_entry(stage: str) -> dict | None:
    import yaml

    lock = task.lock_file(stage)
    return (
        (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage.rpartition(":")[2])
        if lock.exists()
        else None
    )


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise DispatchError(f"git {' '.join(args)}: {task.last_error(done.stderr)}")
    return done


def dvc(*args: str, echo: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if echo:
        print(done.stdout, end="", flush=True)
    if check and done.returncode != 0:
        raise DispatchError(f"dvc {' '.join(args[:2])} ...: {task.last_error(done.stdout + done.stderr)}")
    return done


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
