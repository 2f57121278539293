"""The team set-up, end to end with the real `dvc`: the pipeline on the JAX backend logs to the
team's tracking server (team/server.sh: PostgreSQL, artifacts on the S3-compatible store) with
nothing changed but MLFLOW_TRACKING_URI; what DVC sees of a rerun (the same code, params and data
give the same dvc.lock: no run ids, dates or wall times in hashed outputs; the evaluation finds its
training run by the model file alone); and queued experiments run 2 at a time against the server
(on TensorFlow, from the session's finished pipeline)."""

import json
import sys
import tarfile

import boto3
import pytest
from mlflow.tracking import MlflowClient

from tests.projects import run, run_queue
from tests.test_pipeline import DATA, EVERYTHING, ran


def test_the_pipeline_on_jax_against_the_team_server(
    prepared_project, monkeypatch, team_server, s3_server, tmp_path, warm_jax
):
    """Through bench/gpu_repro.sh, the script that runs the pipeline on a lent GPU machine."""
    pytest.importorskip("jax")
    project = prepared_project  # the data's stages have no backend: they ran once, on the session's fixture
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server)
    out = tmp_path / "out"
    first = run(["bench/gpu_repro.sh"], project, env={"OUT": str(out), "PYTHON": sys.executable})
    assert ran(first.stdout) == EVERYTHING - DATA
    assert "(jax backend)" in first.stdout
    assert_the_script_left_its_results(out)
    for name in ("lenet5", "alexnet"):
        assert 0.0 <= json.loads((project / f"reports/{name}/metrics.json").read_text())["test_accuracy"] <= 1.0
        cost = json.loads((project / f"reports/costs/train-{name}.json").read_text())
        assert cost["keras_backend"] == "jax" and cost["train_seconds"] > 0
    assert "epoch_seconds" not in (project / "reports/lenet5/history.csv").read_text()
    assert not (project / "models/lenet5/run.json").exists()

    client = MlflowClient(tracking_uri=team_server)
    assert_the_runs_and_their_files_are_on_the_server(project, client, s3_server)
    assert_reruns_change_nothing_and_another_store_gets_a_run_of_its_own(project, client)


def assert_the_script_left_its_results(out) -> None:
    """Each stage's wall time, the log, and the files a teammate commits."""
    timeline = json.loads((out / "timeline.json").read_text())
    assert set(timeline) == (EVERYTHING - DATA) | {"total"}
    assert all(seconds > 0 for seconds in timeline.values())
    assert timeline["total"] >= sum(v for k, v in timeline.items() if k != "total") - 1
    assert "Running stage 'report'" in (out / "repro.log").read_text()
    with tarfile.open(out / "results.tar.gz") as packed:
        names = set(packed.getnames())
    assert {"dvc.lock", "params.yaml", "reports/report.md", "reports/costs.md"} <= names
    assert "reports/costs/train-alexnet.json" in names


def assert_the_runs_and_their_files_are_on_the_server(project, client, s3_server) -> None:
    experiment = client.get_experiment_by_name("classic-cnns")
    (trained,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'lenet5-mnist'")
    assert trained.info.status == "FINISHED" and trained.data.params["model.learning_rate"] == "0.002"
    assert {"history.csv", "evaluation"} <= {a.path for a in client.list_artifacts(trained.info.run_id)}
    stored = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="classic-cnns", Prefix="mlflow/")[
            "Contents"
        ]
    ]
    assert any(key.endswith(f"{trained.info.run_id}/artifacts/history.csv") for key in stored)
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()  # all on the server
    assert trained.data.tags["keras_backend"] == "jax"
    assert "--xla_gpu_deterministic_ops=true" in trained.data.tags["determinism"]
    assert "test_accuracy" in trained.data.metrics  # evaluate found the run by the model file's sha256


def assert_reruns_change_nothing_and_another_store_gets_a_run_of_its_own(project, client) -> None:
    experiment = client.get_experiment_by_name("classic-cnns")
    # A rerun of training and evaluation with nothing changed: same bytes, so the same dvc.lock
    lock = (project / "dvc.lock").read_text()
    again = run(["dvc", "repro", "--force", "--single-item", "train@lenet5", "evaluate@lenet5"], project)
    assert ran(again.stdout) == {"train@lenet5", "evaluate@lenet5"}
    assert (project / "dvc.lock").read_text() == lock
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], project).stdout  # the default pipeline (not the grid)
    runs = client.search_runs(
        [experiment.experiment_id], "attributes.run_name = 'lenet5-mnist'", order_by=["attributes.start_time DESC"]
    )
    assert len(runs) == 2 and "test_accuracy" in runs[0].data.metrics  # the newest of the two identical models

    # A model trained against another store (e.g. fetched with `dvc pull`): evaluate logs it in a run of its own
    other = f"sqlite:///{project.parent / 'other.db'}"
    run(["dvc", "repro", "--force", "--single-item", "evaluate@lenet5"], project, env={"MLFLOW_TRACKING_URI": other})
    other_client = MlflowClient(tracking_uri=other)
    (elsewhere,) = other_client.search_runs(
        [other_client.get_experiment_by_name("classic-cnns").experiment_id], "attributes.run_name = 'lenet5-mnist'"
    )
    assert elsewhere.data.tags["trained_elsewhere"] == "true" and "test_accuracy" in elsewhere.data.metrics
    assert (project / "dvc.lock").read_text() == lock


def queue_logs(project, status: str) -> str:
    """Every queued task's log (for a failure's message): `dvc queue logs` takes one task at a time."""
    tasks = [line.split()[0] for line in status.splitlines()[1:] if line.strip() and not line.startswith("Worker")]
    return "\n".join(run(["dvc", "queue", "logs", task], project, check=False).stdout for task in tasks)


def test_queued_experiments_run_at_once_against_the_team_server(pipeline_copy, monkeypatch, team_server):
    """`dvc queue start -j 2`: each experiment a FINISHED run on the server, with its params."""
    project = pipeline_copy
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server)
    client = MlflowClient(tracking_uri=team_server)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "results"], project)
    rates = ["0.001", "0.003"]
    for rate in rates:
        run(["dvc", "exp", "run", "--queue", "-S", f"models.lenet5.learning_rate={rate}", "evaluate@lenet5"], project)
    status = run_queue(project, "-j", "2", timeout_s=900)
    assert status.count("Success") == 2, status + queue_logs(project, status)
    experiment = client.get_experiment_by_name("classic-cnns")
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name LIKE 'lenet5-mnist (%'")
    queued = {
        r.data.params.get("model.learning_rate"): r for r in runs if r.data.params.get("model.learning_rate") in rates
    }
    every = client.search_runs([experiment.experiment_id])  # on failure: every run, for the diagnosis
    seen = [(r.info.run_name, r.info.status, r.data.params.get("model.learning_rate"), r.data.tags.get("model_sha256"),
             r.data.tags.get("trained_elsewhere")) for r in every]  # fmt: skip
    logs = queue_logs(project, status) if sorted(queued) != rates else ""
    assert sorted(queued) == rates, "\n".join(map(str, seen)) + "\n" + logs[-6000:]
    for r in queued.values():
        assert r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics
        assert r.info.run_name == f"lenet5-mnist ({r.data.tags['dvc_exp_name']})"  # told apart in every view


def test_a_run_that_loses_the_race_to_log_a_new_dataset_links_the_winners(tmp_path, monkeypatch):
    """Two queued runs log the same new dataset at once: MLflow's store looks it up, then inserts it,
    so the slower insert breaks the unique key (PostgreSQL's message below, from a CI run). The
    slower run retries, finds the dataset and links it; a different store error still fails."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from classic_cnns.tracking import runs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    meta = {
        "dataset": "mnist",
        "sizes": {"train": 200},
        "provenance": {"official": False, "source": "data/external/mnist", "title": "MNIST", "files": {"a": "0"}},
    }
    real_log_input, calls = mlflow.log_input, []

    def racing(dataset, **kwargs):
        calls.append(dataset.name)
        if len(calls) == 1:
            with mlflow.start_run(nested=True):  # the faster run inserts the dataset first
                real_log_input(dataset, **kwargs)
            postgres = "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint"
            raise MlflowException(f'BAD_REQUEST: {postgres} "dataset_pk"')
        return real_log_input(dataset, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with mlflow.start_run() as slower:
        runs.log_dataset(meta, "training")
    client = mlflow.MlflowClient()
    (linked,) = client.get_run(slower.info.run_id).inputs.dataset_inputs
    faster = client.search_runs([slower.info.experiment_id], "tags.mlflow.parentRunId != ''")[0]
    assert linked.dataset.digest == client.get_run(faster.info.run_id).inputs.dataset_inputs[0].dataset.digest
    assert len(calls) == 2

    def broken(dataset, **kwargs):
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such run")

    monkeypatch.setattr(mlflow, "log_input", broken)
    with mlflow.start_run(), pytest.raises(MlflowException, match="no such run"):
        runs.log_dataset(meta, "training")


def test_a_process_that_loses_the_race_to_create_the_experiment_still_logs_into_it(tmp_path, monkeypatch):
    """Two queued runs on a new server create the experiment at once; the slower is told it already
    exists, and MLflow's set_experiment then returns it without making it active: its runs landed
    in "Default" (seen in this file's queue test). use_store makes it the active experiment."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    from classic_cnns.tracking import store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)  # MLflow's globals as they were, after
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    real_create = TrackingServiceClient.create_experiment

    def created_meanwhile(self, name, *args, **kwargs):  # the faster process creates it first
        real_create(self, name, *args, **kwargs)
        raise MlflowException(f"Experiment(name={name}) already exists.", error_code=RESOURCE_ALREADY_EXISTS)

    monkeypatch.setattr(TrackingServiceClient, "create_experiment", created_meanwhile)
    store.use_store("classic-cnns")
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == mlflow.get_experiment_by_name("classic-cnns").experiment_id != "0"
