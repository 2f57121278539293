"""The MLflow record tells the truth (issue 37; docs/reliability.md, "The MLflow record"): a training
that DVC does not follow with an evaluation still ends with its whole record, a signal at any moment
of a stage is never lost and never leaves a half-made version, and a run whose process was killed
outright is ended KILLED by the next stage."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from classic_cnns import warm
from tests.projects import copy_project, run, run_queue, runs_by_name
from tests.test_training import mlflow_runs, set_params

STOPPED = "error: stopped by SIGTERM; what was finished is kept: rerun the stage to continue"


def client_of(project) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def test_a_retraining_that_dvc_does_not_follow_with_an_evaluation_completes_its_run(pipeline_copy):
    """A fresh clone without a DVC remote: no model, no cache, no store. `dvc repro` retrains LeNet-5
    bit-identically, then rightly skips evaluate (its committed outputs match): the training's run
    takes that evaluation and registers the model, and dvc.lock stays byte-identical."""
    project = pipeline_copy
    for gone in ("mlflow.db", "mlruns", "models/lenet5", ".dvc/cache", "checkpoints"):
        shutil.rmtree(project / gone, ignore_errors=True) if (project / gone).is_dir() else (project / gone).unlink()
    lock = (project / "dvc.lock").read_bytes()
    ran = run(["dvc", "repro", "-s", "train@lenet5", "evaluate@lenet5"], project)
    assert "Running stage 'train@lenet5'" in ran.stdout and "Running stage 'evaluate@lenet5'" not in ran.stdout
    assert (project / "dvc.lock").read_bytes() == lock
    client, runs = runs_by_name(project)
    (trained,) = runs["lenet5-mnist"]
    metrics = __import__("json").loads((project / "reports/lenet5/metrics.json").read_text())
    assert trained.info.status == "FINISHED" and trained.data.tags["evaluation"] == "complete"
    assert {k: trained.data.metrics[k] for k in metrics} == metrics
    assert "inference_images_per_second" in trained.data.metrics
    files = {a.path for a in client.list_artifacts(trained.info.run_id, "evaluation")}
    assert {"evaluation/per_class.csv", "evaluation/confusion.csv", "evaluation/metrics.json"} <= files
    assert trained.data.tags["model_uri"].startswith("models:/")
    champion = client.get_model_version_by_alias("lenet5-mnist", "champion")
    assert (
        champion.run_id == trained.info.run_id and champion.tags["test_accuracy"] == f"{metrics['test_accuracy']:.4f}"
    )
    assert "raw pixel values 0-255" in champion.description
    # evaluate run after all (forced) adds to the same run and finds the same version
    run(["dvc", "repro", "-f", "-s", "evaluate@lenet5"], project)
    _, runs = runs_by_name(project)
    assert [r.info.run_id for r in runs["lenet5-mnist"]] == [trained.info.run_id]
    assert len(client.search_model_versions("name = 'lenet5-mnist'")) == 1


def whole_stage_seconds(cmd, project) -> float:
    """The stage's length: the shorter of two runs (a busy machine can stretch one, and moments
    spaced over a stretched run would mostly come after the end)."""
    seconds = []
    for _ in range(2):
        started = time.monotonic()
        run(cmd, project)
        seconds.append(time.monotonic() - started)
    return min(seconds)


def terminated_at(cmd, project, after_s: float) -> subprocess.CompletedProcess:
    process = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, process.returncode, out, err)


def versions(project) -> list:
    return client_of(project).search_model_versions("name = 'lenet5-mnist'")


def model_runs(project) -> list:
    return [r for r in mlflow_runs(project) if r.info.run_name.startswith("lenet5-mnist")]


def assert_stopped_or_done(result, project, before: tuple[int, dict], moment: str) -> str:
    """Exit 143 with one line, nothing registered, no run left RUNNING, none marked complete; or (the
    signal came after the stage began finishing) exit 0 with every version whole and the run complete;
    or (it came before the interpreter ran any code: a warm stage's first moment on a busy machine)
    killed by it with no output and nothing changed.
    `before`: the number of versions and each model run's (status, evaluation tag) before the stage."""
    lines = result.stderr.strip().splitlines()
    made = versions(project)
    for version in made:  # never half-made
        assert version.tags.get("test_accuracy") and "test accuracy" in version.description, moment
    now = {r.info.run_id: (r.info.status, r.data.tags.get("evaluation", "")) for r in model_runs(project)}
    changed = {run_id: state for run_id, state in now.items() if before[1].get(run_id) != state}
    assert all(status != "RUNNING" for status, _ in now.values()), (moment, now)
    if result.returncode == -signal.SIGTERM:  # a busy machine: the signal came before Python ran any code
        assert result.stdout == result.stderr == "" and not changed and len(made) == before[0], (moment, result)
        return "stopped"
    if result.returncode == 0:
        assert lines in ([], ["SIGTERM arrived as the stage finished: its work is complete"]), (moment, lines)
        assert list(changed.values()) in ([("FINISHED", "complete")], []), (moment, changed)
        assert len(made) >= before[0], moment
        return "done"
    assert result.returncode == 143 and lines == [STOPPED], (moment, result.returncode, result.stderr[-3000:])
    assert len(made) == before[0], moment
    assert all(status == "KILLED" for status, _ in changed.values()), (moment, changed)  # the stage's own run
    return "stopped"


def state(project) -> tuple[int, dict]:
    return len(versions(project)), {
        r.info.run_id: (r.info.status, r.data.tags.get("evaluation", "")) for r in model_runs(project)
    }


def test_sigterm_at_20_moments_of_evaluate_is_never_lost(prepared_project):
    project = prepared_project
    run([sys.executable, "-m", "stages.train", "lenet5"], project)
    cmd = [sys.executable, "-m", "stages.evaluate", "lenet5"]
    whole = whole_stage_seconds(cmd, project)
    outcomes = []
    for i in range(20):
        moment = f"SIGTERM {whole * (i + 0.5) / 20:.2f} s into evaluate ({whole:.1f} s)"
        before = state(project)
        result = terminated_at(cmd, project, whole * (i + 0.5) / 20)
        outcomes.append(assert_stopped_or_done(result, project, before, moment))
    assert outcomes.count("stopped") >= 10, outcomes  # all but the last moments stop it (timing varies)


def test_sigterm_while_a_cold_stage_imports_stops_it_before_any_work(prepared_project, monkeypatch):
    """The suite's stages start warm (tests/conftest.py), so their moments fall in the work; a cold
    start spends seconds importing TensorFlow, and a signal then must stop it too, at its start."""
    project = prepared_project
    monkeypatch.delenv(warm.SOCKET_ENV, raising=False)
    run([sys.executable, "-m", "stages.train", "lenet5"], project)
    before = state(project)
    for after_s in (0.03, 0.5, 1.5):  # the interpreter's start, then TensorFlow's import
        result = terminated_at([sys.executable, "-m", "stages.evaluate", "lenet5"], project, after_s)
        if result.returncode == -signal.SIGTERM:  # a busy machine: the signal came before Python ran any code
            assert after_s == 0.03 and result.stdout == result.stderr == "", (after_s, result)
        else:
            moment = f"SIGTERM {after_s} s into a cold evaluate"
            assert assert_stopped_or_done(result, project, before, moment) == "stopped"
        assert state(project) == before  # nothing began: not even the run was reopened


def test_sigterm_at_20_moments_of_train_is_never_lost(pipeline_copy, tmp_path):
    """On the finished tiny pipeline, so that the training registers its model itself (DVC holds its
    evaluation): a signal during that registration must not cut it in two."""
    cmd = [sys.executable, "-m", "stages.train", "lenet5"]
    base = tmp_path / "base"
    shutil.move(pipeline_copy, base)
    whole = whole_stage_seconds(cmd, copy_project(base, tmp_path / "timed"))
    outcomes = []
    for i in range(20):
        project = copy_project(base, tmp_path / f"try{i}")
        moment = f"SIGTERM {whole * (i + 0.5) / 20:.2f} s into train ({whole:.1f} s)"
        before = state(project)
        result = terminated_at(cmd, project, whole * (i + 0.5) / 20)
        outcomes.append(assert_stopped_or_done(result, project, before, moment))
        shutil.rmtree(project)
    assert outcomes.count("stopped") >= 10, outcomes


def test_a_killed_queued_experiments_run_is_ended_killed_by_the_next_stage(prepared_project, monkeypatch):
    project = prepared_project
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "prepared"], project)
    run(["dvc", "exp", "run", "--queue", "-S", "models.lenet5.epochs=2", "train@lenet5"], project)
    monkeypatch.setenv("CLASSIC_CNN_KILL_AFTER_EPOCH", "1")  # kill -9 after the first epoch
    status = run_queue(project, timeout_s=600)
    assert "Failed" in status, status
    (killed,) = mlflow_runs(project)
    assert killed.info.status == "RUNNING"  # nothing could end it, and its checkpoint went with its workspace
    monkeypatch.delenv("CLASSIC_CNN_KILL_AFTER_EPOCH")
    set_params(project, epochs=1)
    run([sys.executable, "-m", "stages.train", "lenet5"], project, env={k: v for k, v in os.environ.items()})
    killed = client_of(project).get_run(killed.info.run_id)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["killed_reason"].startswith(f"its process ({killed.data.tags['process.host']}, pid ")
