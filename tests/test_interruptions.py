"""Interruptions and broken files: each one line naming the problem and the fix, a non-zero exit,
no MLflow run left RUNNING, no work finished after the signal (docs/reliability.md)."""

import os
import signal
import subprocess
import sys
import zipfile

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit
from tests.projects import run, stage
from tests.test_training import mlflow_runs, set_params


def test_a_yaml_syntax_error_is_a_users_error(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nmodels:\n  lenet5: {epochs: 2\n")
    with pytest.raises(SystemExit) as exit_:
        load_or_exit(bad)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is not valid YAML at line 4, column 1" in line and "please report" not in line


def test_broken_model_and_checkpoint_files_are_named_with_what_restores_them(prepared_project):
    project = prepared_project
    set_params(project, epochs=1)
    stage("train", "lenet5", cwd=project)
    model = project / "models/lenet5/model.keras"
    whole = model.read_bytes()
    model.write_bytes(whole[: len(whole) // 2])
    truncated = stage("evaluate", "lenet5", cwd=project, check=False)
    with zipfile.ZipFile(model, "w") as broken:  # a readable archive whose config.json is not JSON
        broken.writestr("config.json", "{not json")
        broken.writestr("metadata.json", "{}")
    corrupt = stage("evaluate", "lenet5", cwd=project, check=False)
    for result in (truncated, corrupt):
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: models/lenet5/model.keras is broken (") and "please report" not in line
        assert "`dvc checkout --force train@lenet5`" in line  # without --force DVC keeps the broken file

    os.environ["CLASSIC_CNN_KILL_AFTER_EPOCH"] = "1"  # a checkpoint left behind, then broken
    try:
        set_params(project, epochs=2)
        assert stage("train", "lenet5", cwd=project, check=False).returncode == -signal.SIGKILL
    finally:
        del os.environ["CLASSIC_CNN_KILL_AFTER_EPOCH"]
    (project / "checkpoints/lenet5/meta.json").write_text("{")
    resumed = stage("train", "lenet5", cwd=project, check=False)
    assert resumed.returncode == 2
    (line,) = resumed.stderr.strip().splitlines()
    assert "checkpoint in checkpoints/lenet5 is broken" in line and "`rm -r checkpoints/lenet5`" in line


def test_a_run_whose_process_is_gone_is_ended_by_the_next_stage_with_the_reason(prepared_project, monkeypatch):
    project = prepared_project
    set_params(project, epochs=2)
    monkeypatch.setenv("CLASSIC_CNN_KILL_AFTER_EPOCH", "1")
    assert stage("train", "lenet5", cwd=project, check=False).returncode == -signal.SIGKILL
    assert mlflow_runs(project)[-1].info.status == "RUNNING"  # kill -9: nothing could end it
    monkeypatch.delenv("CLASSIC_CNN_KILL_AFTER_EPOCH")
    set_params(project, epochs=1, learning_rate=0.003)
    stage("train", "lenet5", cwd=project)
    abandoned, finished = mlflow_runs(project)
    assert abandoned.info.status == "KILLED" and finished.info.status == "FINISHED"
    pid = abandoned.data.tags["process.pid"]
    assert f"pid {pid}, started " in abandoned.data.tags["killed_reason"]
    assert abandoned.data.tags["killed_reason"].endswith("is gone without ending it (killed, e.g. kill -9)")


def test_sigterm_while_evaluate_logs_ends_it_there_in_one_line(prepared_project, monkeypatch, capsys):
    project = prepared_project
    set_params(project, epochs=1)
    stage("train", "lenet5", cwd=project)
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from stages import evaluate

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)  # MLflow's globals as they were, after
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    before = signal.getsignal(signal.SIGTERM)

    def terminated(*args, **kwargs):  # SIGTERM arrives while the metrics are being logged
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(mlflow, "log_metrics", terminated)
    assert run_stage(evaluate.main, ["lenet5"]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: stopped by SIGTERM; what was finished is kept: rerun the stage to continue"
    ]
    (trained,) = mlflow_runs(project)
    assert trained.info.status == "KILLED"  # its record (the evaluation) is not complete; not left RUNNING
    assert trained.data.tags["evaluation"].startswith("interrupted (Terminated)")
    assert not MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").search_model_versions()
    assert signal.getsignal(signal.SIGTERM) == before  # the test process's own handler is back


def test_a_store_that_cannot_be_written_is_named_before_any_training(prepared_project, tmp_path):
    db = tmp_path / "store.db"
    make = "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment('classic-cnns')"
    subprocess.run([sys.executable, "-c", make, f"sqlite:///{db}"], check=True, capture_output=True)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///file:{db}?mode=ro&uri=true"}  # read-only, also for root
    result = run([sys.executable, "-m", "stages.train", "lenet5"], prepared_project, check=False, env=env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "cannot be written (attempt to write a readonly database)" in line and "MLFLOW_TRACKING_URI" in line
    assert "epoch" not in result.stdout
    assert (tmp_path / "store.db.lock").exists() and not (prepared_project / "file:").exists()  # lock beside the db
