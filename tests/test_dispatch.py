"""Issue 39: stages run by Dask workers (classic_cnns/dispatch). On 127.0.0.1, as on two machines: a
Dask scheduler and two workers as separate processes, each worker in a clone folder of its own, a
moto S3 server as the team's DVC remote and MLflow on PostgreSQL (team/server.sh)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import running_team_server
from tests.projects import run
from tests.servers import free_port, holding_proxy

DASK = str(Path(sys.executable).parent / "dask")


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], project)


def log_to(project: Path, experiment: str) -> None:
    """params.yaml mlflow.experiment: a knob every cell and the claims declare, so they go stale; the
    results do not depend on it."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["mlflow"]["experiment"] = experiment
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def dispatch(project: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "classic_cnns.dispatch", "ablations/dvc.yaml", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def dask_cluster(tmp_path: Path, env: dict, names=("w1", "w2")):
    """`dask scheduler` and a `dask worker` per name, each worker with its own workspace (as on a
    machine of its own); yields (the scheduler's address, {name: worker process})."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    started = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(logs / "scheduler.log", "w"),  # noqa: SIM115 - closed with the process
            start_new_session=True,
        )
    ]
    workers = {}
    for name in names:
        machine = tmp_path / f"machine-{name}"
        machine.mkdir()
        workers[name] = subprocess.Popen(
            [DASK, "worker", address, "--name", name, "--nthreads", "1", "--no-dashboard"],
            cwd=machine,
            env={**env, "CLASSIC_CNNS_WORKSPACE": str(machine / "workspace")},
            stdout=subprocess.DEVNULL,
            stderr=open(logs / f"{name}.log", "w"),  # noqa: SIM115
            start_new_session=True,  # its own group: killing it takes its nanny and children, as a lost machine
        )
        started.append(workers[name])
    try:
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(len(names), timeout=120)
        yield address, workers
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)


def kill_when_mid_cell(client: MlflowClient, experiment: str, worker: str, process, submitted) -> str:
    """kill -9 the worker (its whole process group) once one of its cells is training; that run's id."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if submitted.poll() is not None:
            out, err = submitted.communicate()
            raise AssertionError(f"the dispatch ended before worker {worker} started a cell:\n{out}\n{err}")
        found = client.get_experiment_by_name(experiment)
        if found:
            running = client.search_runs(
                [found.experiment_id], f"attributes.status = 'RUNNING' and tags.`dispatch.worker` = '{worker}'"
            )
            if cells := [r for r in running if "ablation_variant" in r.data.tags]:
                os.killpg(process.pid, signal.SIGKILL)
                return cells[0].info.run_id
        time.sleep(0.2)
    raise AssertionError(f"worker {worker} never started a cell")


def test_two_dask_workers_run_the_tiny_grid_as_a_serial_run_does_with_one_killed_mid_cell(
    grid_copy, s3_server, tmp_path
):
    project = grid_copy
    serial = {p.name: p.read_bytes() for p in (project / "ablations/results").glob("*.json")}
    claims, claims_md = (project / "ablations/claims.json").read_bytes(), (project / "reports/claims.md").read_bytes()
    run(["dvc", "remote", "add", "-d", "team", "s3://classic-cnns/dvc"], project)
    run(["dvc", "remote", "modify", "team", "endpointurl", s3_server], project)
    run(["dvc", "push"], project)  # the prepared data the cells read
    log_to(project, "team-grid")
    commit(project, "the grid, logged to the team's experiment")

    with running_team_server(s3_server) as (uri, _):
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_S3_ENDPOINT_URL": s3_server}
        with dask_cluster(tmp_path, env) as (address, workers):
            submitted = dispatch(project, "--scheduler", address, "--git", str(project), env=env)
            client = MlflowClient(tracking_uri=uri)
            killed = kill_when_mid_cell(client, "team-grid", "w1", workers["w1"], submitted)
            out, err = submitted.communicate(timeout=900)
        assert submitted.returncode == 0, out + err
        experiment = client.get_experiment_by_name("team-grid")
        runs = client.search_runs([experiment.experiment_id])

    # each cell once more than the serial run: the same bytes, the same claims, nothing left to run here
    assert {p.name: p.read_bytes() for p in (project / "ablations/results").glob("*.json")} == serial
    assert (project / "ablations/claims.json").read_bytes() == claims
    assert (project / "reports/claims.md").read_bytes() == claims_md
    assert "5 stage(s) to run: 5 on Dask workers" in out and "on worker w2" in out
    again = run(["dvc", "repro", "ablations/dvc.yaml"], project)
    assert "Running stage" not in again.stdout
    assert "up to date" in run(["dvc", "status", "ablations/dvc.yaml"], project).stdout
    cost = json.loads((project / "reports/costs/cell-lenet5-tanh-max-seed2.json").read_text())
    assert cost["concurrent_cells"] == 2  # two workers on one host (127.0.0.1)

    # MLflow: one FINISHED run per cell; the killed attempt's run ended KILLED, naming the lost worker
    cells = {}
    for r in runs:
        if "ablation_variant" in r.data.tags:
            cells.setdefault(r.info.run_name, []).append(r)
    assert sorted(cells) == [f"{v}-seed{s}" for v in ("lenet5-tanh-avg", "lenet5-tanh-max") for s in (1, 2)]
    for name, attempts in cells.items():
        assert [r.info.status for r in attempts].count("FINISHED") == 1, name
    (lost,) = [r for attempts in cells.values() for r in attempts if r.info.status != "FINISHED"]
    assert all(len(attempts) == 1 for name, attempts in cells.items() if name != lost.info.run_name)  # once each
    assert lost.info.run_id == killed and lost.info.status == "KILLED"
    assert lost.data.tags["dispatch.worker"] == "w1"
    (again,) = [r for r in cells[lost.info.run_name] if r.info.status == "FINISHED"]
    assert again.data.tags["dispatch.worker"] == "w2"
    (parent,) = [r for r in runs if "ablation_grid" in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.tags["claim.1.pooling"]


def test_uncommitted_work_an_unreachable_scheduler_and_a_worker_without_the_data_are_one_line_each(grid_copy):
    project = grid_copy
    log_to(project, "no-data")
    first = dispatch(project, "--workers", "1")
    out, err = first.communicate(timeout=120)
    (line,) = err.strip().splitlines()
    assert first.returncode == 2 and "uncommitted changes" in line and "params.yaml" in line

    commit(project, "the grid, logged to another experiment")
    unreachable = dispatch(project, "--scheduler", f"tcp://127.0.0.1:{free_port()}", "--git", str(project))
    out, err = unreachable.communicate(timeout=120)
    (line,) = err.strip().splitlines()
    assert unreachable.returncode == 2 and "cannot reach the Dask scheduler" in line

    # a DVC remote that holds nothing: the worker's workspace cannot get the prepared data
    (project / "empty-remote").mkdir()
    run(["dvc", "remote", "add", "-d", "empty", str(project / "empty-remote")], project)
    commit(project, "an empty remote")
    results = {p.name: p.read_bytes() for p in (project / "ablations/results").glob("*.json")}
    no_data = dispatch(project, "--workers", "1")
    out, err = no_data.communicate(timeout=600)
    assert len(err.strip().splitlines()) == 1, out + err
    (line,) = err.strip().splitlines()
    assert no_data.returncode == 2, out + err
    assert "data/prepared/mnist.npz" in line and "neither in this workspace nor on the DVC remote" in line
    assert {p.name: p.read_bytes() for p in (project / "ablations/results").glob("*.json")} == results
    store = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    assert store.get_experiment_by_name("no-data") is None  # no stage started: no run, no experiment


def test_a_push_cut_off_on_a_worker_is_finished_by_the_next_attempt_without_a_rerun(prepared_project, s3_server):
    """The remote refuses the first attempt's first upload (403, which no S3 client retries): the
    attempt exits 75 and Dask runs the task again, on the one worker there is; that attempt finds the
    stage in its workspace's run-cache, restores it rather than rerunning it, and pushes."""
    project = prepared_project
    run(["dvc", "remote", "add", "-d", "team", "s3://classic-cnns/dvc"], project)
    run(["dvc", "remote", "modify", "team", "endpointurl", s3_server], project)
    run(["dvc", "push"], project)  # the downloaded files prepare@mnist reads
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prepare"]["val_size"] = 50  # was 40: prepare@mnist stale, and nothing upstream
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with holding_proxy(s3_server, allow=10**6, refuse=1) as proxy:
        run(["dvc", "remote", "modify", "team", "endpointurl", proxy.url], project)
        commit(project, "another validation split, a remote that refuses one upload")
        done = run([sys.executable, "-m", "classic_cnns.dispatch", "prepare@mnist", "--workers", "1"], project)
        assert proxy.refused == 1
        assert "1 stage(s) to run: 1 on Dask workers" in done.stdout
        assert "prepare@mnist: restored from the run-cache on worker 0" in done.stdout, done.stdout
        assert "in sync" in run(["dvc", "status", "--cloud", "prepare@mnist"], project).stdout
    assert "up to date" in run(["dvc", "status", "prepare@mnist"], project).stdout
    assert json.loads((project / "data/prepared/mnist.json").read_text())["sizes"]["val"] == 50  # the new split
