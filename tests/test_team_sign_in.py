"""The team server beyond 127.0.0.1 lets only signed-in members in (team/server.sh: MLflow's
basic-auth app): nobody else reads or changes a run, a stage without a member's name and password
stops in one line before any work, and members log and register but cannot delete another's runs."""

import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TEAM_SCRIPT
from tests.projects import run


def test_a_server_beyond_loopback_does_not_start_without_an_admin_password(tmp_path):
    env = {**os.environ, "TEAM_DIR": str(tmp_path), "MLFLOW_HOST": "0.0.0.0", "TEAM_DB_PASSWORD": "db"}
    env.pop("TEAM_ADMIN_PASSWORD", None)
    refused = subprocess.run([TEAM_SCRIPT, "start"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "set TEAM_ADMIN_PASSWORD" in refused.stderr
    assert "0.0.0.0" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def add_user(env: dict, name: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TEAM_SCRIPT, "add-user", name], env={**env, "TEAM_USER_PASSWORD": password}, capture_output=True, text=True
    )


def signed_in(name: str, password: str) -> dict:
    return {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password}


def test_only_signed_in_members_reach_the_team_server(pipeline_copy, signed_in_team_server, monkeypatch):
    uri, env = signed_in_team_server
    project = pipeline_copy
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    evaluate = [sys.executable, "-m", "stages.evaluate", "lenet5"]

    # nobody signed in: the API answers 401, and a stage stops in one line naming the fix
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(uri + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert anonymous.value.code == 401
    before = (project / "reports/lenet5/metrics.json").read_bytes()
    refused = run(evaluate, project, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "lets only signed-in members in" in refused.stderr and "MLFLOW_TRACKING_USERNAME" in refused.stderr
    assert (project / "reports/lenet5/metrics.json").read_bytes() == before  # stopped before any work

    # the admin adds members; a wrong password is named in one line
    assert add_user(env, "alice", "alice-secret-1").returncode == 0
    assert add_user(env, "bob", "bob-secret-1").returncode == 0
    wrong_admin = add_user({**env, "TEAM_ADMIN_PASSWORD": "guess"}, "eve", "eve-secret-1")
    assert wrong_admin.returncode == 1 and "the admin's name or password is wrong" in wrong_admin.stderr
    wrong = run(evaluate, project, check=False, env=signed_in("alice", "guess"))
    assert wrong.returncode == 2 and "the name alice or its password" in wrong.stderr, wrong.stderr

    # a member evaluates, logs and registers; another member reads it but cannot delete it
    run(evaluate, project, env=signed_in("alice", "alice-secret-1"))
    alice = MlflowClient(tracking_uri=uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-secret-1")
    experiment = alice.get_experiment_by_name("classic-cnns")
    (logged,) = alice.search_runs([experiment.experiment_id])
    assert "test_accuracy" in logged.data.metrics and alice.search_model_versions("name='lenet5-mnist'")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "bob-secret-1")
    bob = MlflowClient(tracking_uri=uri)
    assert bob.get_run(logged.info.run_id).data.metrics == logged.data.metrics
    with pytest.raises(Exception, match="403|Permission denied|PERMISSION_DENIED"):
        bob.delete_run(logged.info.run_id)
    assert bob.get_run(logged.info.run_id).info.lifecycle_stage == "active"
