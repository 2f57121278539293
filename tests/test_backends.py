"""The pipeline on the JAX backend, end to end with the real `dvc`, and what DVC sees of a rerun:
the same code, params and data give the same dvc.lock (no run ids, dates or wall times in hashed
outputs), and the evaluation finds its training run by the model file alone."""
import json

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run
from tests.test_pipeline import ran

EVERYTHING = {"download@mnist", "download@cifar10", "prepare@mnist", "prepare@cifar10", "train@lenet5",
              "train@alexnet", "evaluate@lenet5", "evaluate@alexnet", "diagnose", "report"}


def test_dvc_repro_on_jax_and_a_rerun_leaves_dvc_status_clean(project, monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    first = run(["dvc", "repro"], project)
    assert ran(first.stdout) == EVERYTHING
    assert "(jax backend)" in first.stdout
    for name in ("lenet5", "alexnet"):
        assert 0.0 <= json.loads((project / f"reports/{name}/metrics.json").read_text())["test_accuracy"] <= 1.0
        cost = json.loads((project / f"reports/costs/train-{name}.json").read_text())
        assert cost["keras_backend"] == "jax" and cost["train_seconds"] > 0
    assert "epoch_seconds" not in (project / "reports/lenet5/history.csv").read_text()
    assert not (project / "models/lenet5/run.json").exists()

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classic-cnns")
    (trained,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'lenet5-mnist'")
    assert trained.data.tags["keras_backend"] == "jax"
    assert "--xla_gpu_deterministic_ops=true" in trained.data.tags["determinism"]
    assert "test_accuracy" in trained.data.metrics  # evaluate found the run by the model file's sha256

    # A rerun of training and evaluation with nothing changed: same bytes, so the same dvc.lock
    lock = (project / "dvc.lock").read_text()
    again = run(["dvc", "repro", "--force", "--single-item", "train@lenet5", "evaluate@lenet5"], project)
    assert ran(again.stdout) == {"train@lenet5", "evaluate@lenet5"}
    assert (project / "dvc.lock").read_text() == lock
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], project).stdout  # the default pipeline (not the grid)
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name = 'lenet5-mnist'",
                              order_by=["attributes.start_time DESC"])
    assert len(runs) == 2 and "test_accuracy" in runs[0].data.metrics  # the newest of the two identical models

    # A model trained against another store (e.g. fetched with `dvc pull`): evaluate logs it in a run of its own
    other = f"sqlite:///{project / 'other.db'}"
    run(["dvc", "repro", "--force", "--single-item", "evaluate@lenet5"], project, env={"MLFLOW_TRACKING_URI": other})
    client = MlflowClient(tracking_uri=other)
    experiment = client.get_experiment_by_name("classic-cnns")
    (elsewhere,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'lenet5-mnist'")
    assert elsewhere.data.tags["trained_elsewhere"] == "true" and "test_accuracy" in elsewhere.data.metrics
    assert (project / "dvc.lock").read_text() == lock
