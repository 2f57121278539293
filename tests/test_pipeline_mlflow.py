"""What the default pipeline leaves in MLflow: a run per model with its evaluation, the registry,
the report run, all readable through a real `mlflow server`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np

from classic_cnns.paths import project_root
from tests.projects import runs_by_name
from tests.servers import free_port


def metrics_of(root) -> dict[str, dict]:
    return {m: json.loads((root / f"reports/{m}/metrics.json").read_text()) for m in ("lenet5", "alexnet")}


def test_mlflow_holds_a_run_per_model_with_its_params_metrics_tags_and_files(pipeline):
    root = pipeline.root
    metrics = metrics_of(root)
    client, runs = runs_by_name(root)
    assert {k: len(v) for k, v in runs.items()} == {"lenet5-mnist": 1, "alexnet-cifar10": 1, "report": 1}
    for name, model in (("lenet5-mnist", "lenet5"), ("alexnet-cifar10", "alexnet")):
        r = runs[name][0]
        assert r.info.status == "FINISHED"
        assert r.data.params["model.epochs"] == "1"
        assert r.data.params["seed"] == "42"
        assert r.data.metrics["test_accuracy"] == metrics[model]["test_accuracy"]
        assert r.data.metrics["test_accuracy_single_view"] == metrics[model]["test_accuracy_single_view"]
        assert len(client.get_metric_history(r.info.run_id, "val_accuracy")) == 1
        assert r.data.tags["device"].startswith(("CPU", "GPU"))
        assert r.data.tags["version.keras"]
        assert r.data.tags["git_commit"] != "unknown"
        assert_settings_are_tags_and_results_metrics(client, r)
        assert_the_run_holds_its_files_and_dataset(client, r, model)
    lenet = runs["lenet5-mnist"][0]
    assert (
        lenet.data.tags["dataset_sha256.train-images-idx3-ubyte.gz"]
        == json.loads((root / "data/raw/mnist/provenance.json").read_text())["files"]["train-images-idx3-ubyte.gz"]
    )


def assert_settings_are_tags_and_results_metrics(client, r) -> None:
    assert not {"parameters", "devices", "processes", "test_images", "test_views", "epochs_run"} & set(r.data.metrics)
    assert int(r.data.tags["parameters"]) > 0
    assert r.data.tags["devices"] == "1" and r.data.tags["evaluate.test_images"]
    assert r.data.tags["precision"] == "float32"  # what it computed in (the tiny project sets false)
    (final,) = client.get_metric_history(r.info.run_id, "final_val_accuracy")
    assert final.step == int(r.data.params["model.epochs"])  # a result at the last epoch, not at step 0
    assert "train_seconds" in r.data.metrics and "inference_images_per_second" in r.data.metrics


def assert_the_run_holds_its_files_and_dataset(client, r, model: str) -> None:
    artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"history.csv", "evaluation", "figures", "report"} <= artifacts
    assert "evaluation/confusion.csv" in {a.path for a in client.list_artifacts(r.info.run_id, "evaluation")}
    figures = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
    assert f"figures/{model}-confusion.png" in figures and f"figures/{model}-learning-curves.png" in figures
    (dataset,) = {i.dataset.name: i for i in r.inputs.dataset_inputs}.values()
    assert dataset.dataset.name == r.data.tags["dataset"] and len(dataset.dataset.digest) == 32
    tags = {t.key: t.value for t in dataset.tags}
    assert tags["mlflow.data.context"] in ("training", "testing") and int(tags["train_images"]) > 0
    assert tags["title"] == r.data.tags["dataset_title"]


def test_a_runs_model_loads_through_the_store_and_the_registry_names_the_champion(pipeline, monkeypatch, capfd):
    root = pipeline.root
    metrics = metrics_of(root)
    client, runs = runs_by_name(root)
    lenet = runs["lenet5-mnist"][0]
    # the run's model through this store (mlflow's global tracking URI and the variable restored after)
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    assert lenet.data.tags["model_uri"].startswith("models:/m-")  # the logged model, registered as it is
    loaded = mlflow.pyfunc.load_model(lenet.data.tags["model_uri"])
    with np.load(root / "data/prepared/mnist.npz") as data:
        x = data["x_test"][:5].astype("float32")
    capfd.readouterr()
    probs = np.asarray(loaded.predict(x))
    assert capfd.readouterr().out == ""  # no Keras progress bar (MLflow's keras flavor prints one)
    assert probs.shape == (5, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    keras_model = loaded.unwrap_python_model().model
    assert np.allclose(keras_model.predict(x, verbose=0), probs)
    # the input example says the scale: raw pixels 0-255 (the registered version's description too)
    example = mlflow.models.Model.load(lenet.data.tags["model_uri"]).load_input_example(
        mlflow.artifacts.download_artifacts(lenet.data.tags["model_uri"])
    )
    assert example.shape == (1, 32, 32, 1) and example.min() == 0.0 and example.max() == 255.0

    for registered in ("lenet5-mnist", "alexnet-cifar10"):
        (version,) = client.search_model_versions(f"name='{registered}'")
        model = registered.split("-")[0]
        assert version.tags["test_accuracy"] == f"{metrics[model]['test_accuracy']:.4f}"
        assert version.run_id == runs[registered][0].info.run_id
        assert client.get_model_version_by_alias(registered, "champion").version == version.version
        assert "raw pixel values 0-255, not scaled to 0-1" in version.description


def test_the_report_run_holds_the_report_and_a_server_lists_every_run_and_model(pipeline):
    root = pipeline.root
    client, runs = runs_by_name(root)
    (report_run,) = runs["report"]
    assert {a.path for a in client.list_artifacts(report_run.info.run_id, "report")} >= {
        "report/report.md",
        "report/report.html",
        "report/figures",
        "report/sections",
    }

    listed = query_mlflow_server(root)
    assert {"lenet5-mnist", "alexnet-cifar10", "report"} <= listed["runs"]
    assert {"lenet5-mnist", "alexnet-cifar10"} <= listed["registered_models"]


def test_temp_experiments_log_to_the_projects_store(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12"))
    assert project_root() == tmp_path / "proj"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "proj"))
    assert project_root() == tmp_path / "proj"


def query_mlflow_server(root) -> dict[str, set[str]]:
    """Start a real `mlflow server` on 127.0.0.1 over the project's store and list, through its REST
    API, the runs of the experiment and the registered models."""
    port = free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"

    def call(path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                experiment = call("/experiments/get-by-name?experiment_name=classic-cnns")["experiment"]
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        runs = call("/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})
        models = call("/registered-models/search?max_results=100")
        return {
            "runs": {r["info"]["run_name"] for r in runs.get("runs", [])},
            "registered_models": {m["name"] for m in models.get("registered_models", [])},
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
