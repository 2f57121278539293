"""Data-parallel training (`models.<name>.devices`, classic_cnns/training/distribute.py): on JAX, two
virtual CPU devices, and two processes on 127.0.0.1, train as one device does (batch_size is the
global batch); each process feeds its own share of every batch; other backends get one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from classic_cnns.training.distribute import Placement, local_share
from tests.projects import run
from tests.servers import free_port
from tests.test_training import set_params, weights
from tests.test_warm import forked


def test_the_processes_shares_make_up_each_global_batch_in_order():
    x = np.arange(70)  # 4 batches of 16 and 6 rows
    shares = [local_share((x,), 16, Placement(devices=2, processes=2, index=i))[0] for i in range(2)]
    for b in range(4):
        assert np.array_equal(np.concatenate([s[b * 8 : (b + 1) * 8] for s in shares]), x[b * 16 : (b + 1) * 16])
    assert np.array_equal(np.concatenate([s[32:] for s in shares]), x[64:70])
    assert np.array_equal(local_share((x,), 16, Placement(devices=4))[0], x[:68])  # the last batch splits over 4
    assert local_share((x,), 16, Placement())[0] is x


def train(project, env: dict) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "stages.train", "lenet5"], project, env={"KERAS_BACKEND": "jax", **env})


def test_two_devices_and_two_processes_train_as_one_device(prepared_project, warm_jax):
    pytest.importorskip("jax")
    project = prepared_project
    set_params(project, epochs=2)
    train(project, {})
    history = pd.read_csv(project / "reports/lenet5/history.csv")
    one = weights(project)

    set_params(project, epochs=2, devices=2)
    two = train(project, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert "x2 (jax backend)" in two.stdout
    pd.testing.assert_frame_equal(pd.read_csv(project / "reports/lenet5/history.csv"), history, atol=1e-5)
    for a, b in zip(weights(project), one, strict=False):
        np.testing.assert_allclose(a, b, atol=1e-5)

    # two processes on 127.0.0.1, one CPU device each: the first writes the outputs, the other only trains
    set_params(project, epochs=2, devices="all")
    (project / "models/lenet5/model.keras").unlink()
    cluster = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{free_port()}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "lenet5"],
        cwd=project,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax", **cluster, "KERAS_DISTRIBUTION_PROCESS_ID": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    chief = train(project, {**cluster, "KERAS_DISTRIBUTION_PROCESS_ID": "0"})
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, out + err
    assert "process 2 of 2, 2 devices in all" in out and "trained" not in out
    assert "x2 in 2 processes (jax backend)" in chief.stdout
    pd.testing.assert_frame_equal(pd.read_csv(project / "reports/lenet5/history.csv"), history, atol=1e-5)
    for a, b in zip(weights(project), one, strict=False):
        np.testing.assert_allclose(a, b, atol=1e-5)
    cost = json.loads((project / "reports/costs/train-lenet5.json").read_text())
    assert (cost["devices"], cost["processes"]) == (2, 2)
    # each of the four trainings ran on the warm JAX server: XLA_FLAGS and KERAS_DISTRIBUTION_* are read
    # only as the stage makes its backend or calls keras.distribution.initialize(), after the fork
    if "jax" in warm_jax.sockets:
        assert len(forked(warm_jax.sockets["jax"].with_suffix(".log"), project)) == 4


def test_several_devices_on_another_backend_is_one_line(prepared_project):
    project = prepared_project
    set_params(project, devices=2)
    failed = run(
        [sys.executable, "-m", "stages.train", "lenet5"], project, check=False, env={"KERAS_BACKEND": "tensorflow"}
    )
    (line,) = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and "devices: 2" in line and "KERAS_BACKEND=jax" in line
    assert not (project / "models").exists()
