"""What a temporary or queued DVC experiment leaves in the project's MLflow store (issue 37): its
artifacts where they survive the experiment's deleted workspace, and registered versions that load."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from tests.projects import run, run_queue, runs_by_name


def assert_every_run_keeps_its_artifacts_and_versions_load(project, monkeypatch) -> None:
    client, runs = runs_by_name(project)
    experiment = client.get_experiment_by_name("classic-cnns")
    assert experiment.artifact_location == (project / "mlruns").as_uri()
    trained = [r for name, rs in runs.items() if name.startswith("lenet5-mnist") for r in rs]
    assert trained
    for r in trained:
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"history.csv", "evaluation"} <= artifacts, (r.info.run_name, r.info.artifact_uri)
    versions = client.search_model_versions("name = 'lenet5-mnist'")
    assert versions
    data = np.load(project / "data/prepared/mnist.npz")
    x, y = data["x_test"].astype("float32"), data["y_test"]
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)  # restored after
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    for version in versions:
        model = mlflow.pyfunc.load_model(f"models:/lenet5-mnist/{version.version}")
        accuracy = float((np.asarray(model.predict(x)).argmax(axis=1) == y).mean())
        assert f"{accuracy:.4f}" == version.tags["test_accuracy"], version.version


def test_a_temporary_experiment_keeps_its_artifacts_and_registers_loadable_models(prepared_project, monkeypatch):
    """The README's first command is a `--temp` experiment: DVC deletes its workspace afterwards, and
    with it MLflow's default ./mlruns (the experiment was once created there)."""
    project = prepared_project
    run(["dvc", "exp", "run", "--temp", "-n", "quick", "evaluate@lenet5"], project)
    assert not list(project.glob(".dvc/tmp/exps/**/mlruns"))
    assert_every_run_keeps_its_artifacts_and_versions_load(project, monkeypatch)
    # a workspace run after it logs to the same experiment, its artifacts beside the store too
    run(["dvc", "repro", "evaluate@lenet5"], project)
    assert_every_run_keeps_its_artifacts_and_versions_load(project, monkeypatch)


def test_a_queued_experiment_keeps_its_artifacts_and_registers_loadable_models(prepared_project, monkeypatch):
    project = prepared_project
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "prepared"], project)
    run(["dvc", "exp", "run", "--queue", "-S", "models.lenet5.learning_rate=0.003", "evaluate@lenet5"], project)
    status = run_queue(project, timeout_s=600)
    assert status.count("Success") == 1, status
    assert_every_run_keeps_its_artifacts_and_versions_load(project, monkeypatch)


def test_an_experiment_whose_artifacts_went_to_a_temporary_folder_is_refused_in_one_line(tmp_path, monkeypatch):
    from classic_cnns.errors import UserError
    from classic_cnns.tracking import store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    lost = (tmp_path / ".dvc/tmp/exps/standalone/tmpab12/mlruns/1").as_posix()
    mlflow.MlflowClient(uri).create_experiment("classic-cnns", artifact_location=lost)
    with pytest.raises(UserError, match="temporary folder DVC deletes.*mlflow experiments rename"):
        store.use_store("classic-cnns")


def test_quick_mode_keeps_the_precision_params_yaml_chooses():
    """`mixed_precision: auto` computes in bfloat16 only where measured faster; quick mode used to force float32."""
    import re

    import yaml

    from tests.projects import ROOT

    script = (ROOT / "experiments/quick.sh").read_text()
    assert not re.search(r"-S \S*mixed_precision", script)
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["models"]["alexnet"]["mixed_precision"] == "auto"


def test_the_readmes_exp_show_line_shows_each_experiments_state(pipeline_copy):
    """Without the State column a failed (queued) experiment shows the baseline's accuracy as its own."""
    import re
    import shlex

    from tests.projects import ROOT

    (line,) = [s.strip() for s in (ROOT / "README.md").read_text().splitlines() if s.strip().startswith("dvc exp show")]
    run(["git", "add", "-A"], pipeline_copy)
    run(["git", "commit", "-qm", "results"], pipeline_copy)
    shown = run([*shlex.split(line), "--csv"], pipeline_copy).stdout
    header = shown.splitlines()[0].split(",")
    assert header[:3] == ["Experiment", "Created", "State"], shown
    assert any(re.fullmatch(r"reports/\w+/metrics.json:test_accuracy", column) for column in header), shown
