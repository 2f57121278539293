"""Warm starts (classic_cnns/warm.py): a stage forked by the server runs as a cold `python -m
stages.<name>` would, in its folder and environment, with its streams, exit status and signals; a
stage the server cannot run (another backend) starts cold; a killed command takes its stage along."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from classic_cnns import warm
from tests.projects import ROOT, stage


@pytest.fixture
def server_log(warm_stages):
    """The log of the server for the stages' own backend (conftest.warm_stages starts it first)."""
    return warm_stages.sockets[warm_stages.default].with_suffix(".log")


def forked(server_log, cwd) -> list[int]:
    """The pids of the stages the server forked for commands run in `cwd`."""
    lines = server_log.read_text().splitlines()
    return [int(line.rsplit(" ", 1)[1]) for line in lines if f" in {cwd}: pid " in line]


def test_a_warm_training_equals_a_cold_one(prepared_project, server_log, monkeypatch):
    project = prepared_project
    warm_run = stage("train", "lenet5", cwd=project)
    assert warm_run.stderr == ""
    assert len(forked(server_log, project)) == 1
    made_warm = (project / "models/lenet5/model.keras").read_bytes()
    history = (project / "reports/lenet5/history.csv").read_text()

    (project / "models/lenet5/model.keras").unlink()
    monkeypatch.delenv(warm.SOCKET_ENV)
    cold_run = stage("train", "lenet5", cwd=project)
    assert len(forked(server_log, project)) == 1  # not through the server
    assert (project / "models/lenet5/model.keras").read_bytes() == made_warm
    assert (project / "reports/lenet5/history.csv").read_text() == history
    strip = lambda out: [line.split(" (")[0] for line in out.splitlines() if "MLflow run" not in line]  # noqa: E731
    assert strip(warm_run.stdout) == strip(cold_run.stdout)


def test_exit_statuses_signals_and_a_killed_command_are_the_stages(prepared_project, server_log):
    project = prepared_project
    bad = stage("train", "nosuchmodel", cwd=project, check=False)
    assert bad.returncode == 2 and "invalid choice: 'nosuchmodel'" in bad.stderr  # argparse's SystemExit
    assert len(forked(server_log, project)) == 1

    # SIGTERM reaches the stage, which stops with its one line and 143
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "lenet5"], cwd=project, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline().startswith("lenet5: ")  # training has begun
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143 and err.strip().splitlines() == [
        "error: stopped by SIGTERM; what was finished is kept: rerun the stage to continue"
    ]

    # kill -9 of the command: its stage goes too (PYTHONUNBUFFERED and PYTHON, as bench/gpu_repro.sh sets them,
    # and JAX's memory share, as Dask workers sharing a GPU get it: still warm)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHON": sys.executable, "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "lenet5"], cwd=project, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout.readline().startswith("lenet5: ")
    *_, stage_pid = forked(server_log, project)
    assert len(forked(server_log, project)) == 3
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{stage_pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{stage_pid}")


def test_a_stage_on_another_backend_starts_cold(prepared_project, server_log, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "nosuchbackend")
    result = stage("train", "lenet5", cwd=prepared_project, check=False)
    assert result.returncode == 2 and "nosuchbackend" in result.stderr  # the cold start's own check
    assert forked(server_log, prepared_project) == []  # asked, refused, started here
    assert f"in {prepared_project}: cold (another Python, or KERAS_BACKEND differs)" in server_log.read_text()


def test_a_stage_runs_on_the_listed_server_of_its_backend(prepared_project, warm_jax, monkeypatch):
    """CLASSIC_CNNS_WARM lists a server per backend: a JAX stage passes the TensorFlow one by."""
    warm_stages = warm_jax.sockets
    if "jax" not in warm_stages or "tensorflow" not in warm_stages:
        pytest.skip("needs JAX installed and TensorFlow the default backend")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    result = stage("train", "lenet5", cwd=prepared_project)
    assert "(jax backend)" in result.stdout and result.stderr == ""
    assert forked(warm_stages["jax"].with_suffix(".log"), prepared_project) != [], (
        warm_stages["jax"].with_suffix(".log").read_text()
    )
    tensorflow_log = warm_stages["tensorflow"].with_suffix(".log")
    assert forked(tensorflow_log, prepared_project) == []
    assert f"in {prepared_project}: cold (another Python, or KERAS_BACKEND differs)" in tensorflow_log.read_text()


@pytest.mark.slow  # the warm server loads the frameworks
def test_a_benchmark_runs_warm_too(server_log, tmp_path):
    """`python -m bench.<name>` asks the server first, as a stage does (bench/__init__.py)."""
    before = len(forked(server_log, ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "bench.timeline", str(tmp_path / "timeline.json")], cwd=ROOT, capture_output=True,
        text=True, input="Running stage 'a':\ndone\n", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == "Running stage 'a':\ndone\n", result.stderr
    assert set(json.loads((tmp_path / "timeline.json").read_text())) == {"a", "total"}
    assert len(forked(server_log, ROOT)) == before + 1
