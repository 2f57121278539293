"""Faults that cost nothing: a full disk, a dead or dying tracking server, concurrent experiments
on a new store, an unexpected exception. Each ends as one line and a non-zero exit, and loses
nothing (README, "Reliability")."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from classic_cnns import outputs, warm
from classic_cnns.errors import TRACEBACK_ENV, DiskFull, run_stage
from tests.projects import stage
from tests.servers import free_port
from tests.test_training import set_params


def test_a_full_disk_during_prepare_is_named_and_leaves_nothing(prepared_project, small_disk):
    project = prepared_project
    shutil.rmtree(project / "data" / "prepared")
    (project / "data" / "prepared").symlink_to(small_disk)
    result = stage("prepare", "mnist", cwd=project, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: disk full: writing mnist.npz in data/prepared needs 1.4 MB, 0.3 MB free")
    assert list(small_disk.iterdir()) == []


def test_a_file_that_does_not_fit_is_not_left_half_written(small_disk):
    target = small_disk / "report.md"
    target.write_text("the previous report\n")
    with pytest.raises(DiskFull, match=f"disk full: writing report.md .* in {small_disk}"):
        outputs.write_text(target, "x" * 1_000_000)
    assert target.read_text() == "the previous report\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["report.md"]


def test_an_unexpected_error_is_one_line_and_the_traceback_is_there_on_request(monkeypatch, capsys):
    def broken(argv):
        raise KeyError("boom")

    assert run_stage(broken, []) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: KeyError: 'boom' (unexpected: please report it; rerun with {TRACEBACK_ENV}=1 for the traceback)"
    ]
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    assert run_stage(broken, []) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("server", ["refusing", "silent"])
def test_a_dead_tracking_server_fails_the_stage_in_seconds(prepared_project, monkeypatch, server):
    project = prepared_project
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = "http://127.0.0.1:9" if server == "refusing" else f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        started = time.monotonic()
        result = stage("train", "lenet5", cwd=project, check=False)
        assert time.monotonic() - started < 60  # the import of TensorFlow included; was over 4 minutes
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"the MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer" in line
    assert "unset MLFLOW_TRACKING_URI" in line
    assert "epoch" not in result.stdout  # nothing trained
    assert not (project / "models").exists()


def start_server(folder: Path, port: int) -> subprocess.Popen:
    """A real MLflow tracking server on 127.0.0.1, its store and artifacts in `folder`."""
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            (folder / "artifacts").as_uri(),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and server.poll() is None:  # exited: e.g. the port still held
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError(f"the MLflow server did not start (exit status {server.poll()})")


def stop_server(server: subprocess.Popen, port: int) -> None:
    """Kill the server and its workers, as a crash would, and wait until nothing listens on the port:
    a worker still dying would answer start_server's check and keep the next server off the port."""
    if server.poll() is None:
        os.killpg(server.pid, 9)
        server.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.1)
    raise AssertionError(f"port {port} still answers after the MLflow server was killed")


def test_a_server_that_dies_mid_training_costs_no_epoch_and_logs_each_once(prepared_project, tmp_path, monkeypatch):
    project = prepared_project
    set_params(project, epochs=3)
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    server = start_server(tmp_path, port)
    try:
        train = subprocess.Popen(
            [sys.executable, "-m", "stages.train", "lenet5"],
            cwd=project,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen = []
        for line in train.stdout:
            seen.append(line)
            if line.startswith("lenet5 epoch 1/3"):
                stop_server(server, port)
        train.wait(timeout=300)
        out, err = "".join(seen), train.stderr.read()
        assert train.returncode == 2, out + err
        assert "lenet5 epoch 3/3" in out  # training went on without the server
        assert "training goes on" in out
        (line,) = err.strip().splitlines()
        assert f"the MLflow tracking store http://127.0.0.1:{port} failed while logging epochs" in line
        assert "(connection refused); the trained model is kept in checkpoints/lenet5/: rerun" in line
        assert not (project / "models").exists()

        server = start_server(tmp_path, port)
        resumed = stage("train", "lenet5", cwd=project)
        assert "resuming after epoch 3" in resumed.stdout and "epoch 1/3" not in resumed.stdout
        client = MlflowClient(f"http://127.0.0.1:{port}")
        (finished,) = client.search_runs([client.get_experiment_by_name("classic-cnns").experiment_id])
        assert finished.info.status == "FINISHED"
        for key in ("loss", "val_accuracy", "epoch_seconds"):
            assert [m.step for m in client.get_metric_history(finished.info.run_id, key)] == [1, 2, 3]
        assert (project / "models/lenet5/model.keras").exists()
    finally:
        stop_server(server, port)


WORKER = """
import pathlib, sys, time
import mlflow
from classic_cnns.tracking import store
pathlib.Path(f"ready{sys.argv[2]}").touch()
while not pathlib.Path("go").exists():  # all start at the same moment
    time.sleep(0.01)
store.use_store("classic-cnns")
with mlflow.start_run():
    mlflow.log_params({"worker": sys.argv[2]})
    mlflow.log_metric("loss", 1.0, step=1)
"""


@pytest.mark.slow  # 9 processes that load MLflow
def test_concurrent_experiments_on_a_new_store_all_finish(tmp_path):
    """The first use of a new SQLite store creates its schema; three experiments starting at
    once used to break it (`table _alembic_tmp_experiments already exists`)."""
    for trial in range(3):
        root = tmp_path / f"project{trial}"
        root.mkdir()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        env.pop("MLFLOW_TRACKING_URI", None)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, "", str(i)],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        deadline = time.monotonic() + 120
        while len(list(root.glob("ready*"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        (root / "go").touch()
        for w in workers:
            _, err = w.communicate(timeout=300)
            assert w.returncode == 0, err
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("classic-cnns").experiment_id])
        assert sorted(r.data.params["worker"] for r in runs) == ["0", "1", "2"]
        assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_stage_run_before_its_inputs_exist_names_the_stage_that_makes_them(project):
    result = stage("evaluate", "lenet5", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data/prepared/mnist.json is missing: run `dvc repro prepare@mnist` first"
    ]


def test_a_stage_run_before_the_model_exists_names_the_training_stage(prepared_project):
    result = stage("evaluate", "lenet5", cwd=prepared_project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: models/lenet5/model.keras is missing: run `dvc repro train@lenet5` first"
    ]


def test_a_server_back_with_a_new_database_is_named_so_and_a_rerun_logs_a_new_run(
    prepared_project, tmp_path, monkeypatch
):
    """The store answers again but no longer has the run: not "does not answer", and the rerun
    starts a new run holding every epoch from the checkpoint."""
    project = prepared_project
    set_params(project, epochs=3)
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.delenv(warm.SOCKET_ENV, raising=False)  # SIGSTOP must stop the training itself
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    server = start_server(tmp_path / "old", port)
    try:
        train = subprocess.Popen(
            [sys.executable, "-m", "stages.train", "lenet5"], cwd=project, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        seen = []
        for line in train.stdout:
            seen.append(line)
            if line.startswith("lenet5 epoch 1/3"):
                train.send_signal(signal.SIGSTOP)  # held while the server comes back, so it is back before the end
                stop_server(server, port)
                server = start_server(tmp_path / "new", port)  # an empty database
                train.send_signal(signal.SIGCONT)
        train.wait(timeout=300)
        out, err = "".join(seen), train.stderr.read()
        assert train.returncode == 2, out + err
        (line,) = err.strip().splitlines()
        assert f"the MLflow tracking store http://127.0.0.1:{port} answers but no longer holds" in line
        assert "a new or reset database?; the trained model is kept in checkpoints/lenet5/" in line
        resumed = stage("train", "lenet5", cwd=project)
        assert "is not in this store; starting a new run" in resumed.stdout
        client = MlflowClient(f"http://127.0.0.1:{port}")
        (finished,) = client.search_runs([client.get_experiment_by_name("classic-cnns").experiment_id])
        assert finished.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(finished.info.run_id, "loss")] == [1, 2, 3]
    finally:
        stop_server(server, port)
