"""Training health checks, kill-and-resume, determinism, recipes (on tiny data)."""

import json
import math
import re

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from classic_cnns.errors import TrainingFailed
from classic_cnns.params import load_params
from classic_cnns.training.augment import epoch_data
from classic_cnns.training.checkpoint import KILL_AFTER_EPOCH_ENV, KILL_BEFORE_CHECKPOINT_ENV, KILL_SIGNAL_ENV
from classic_cnns.training.health import check_learning
from tests.projects import ROOT, run, stage


def set_params(root, model="lenet5", **settings):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    health = settings.pop("health", None)
    raw["models"][model].update(settings)
    if health:
        raw["health"].update(health)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def weights(root):
    import keras

    model = keras.models.load_model(root / "models/lenet5/model.keras")
    return [np.asarray(w) for w in model.weights]


def mlflow_runs(root):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classic-cnns")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_check_learning_flags_a_loss_stuck_at_ln_classes():
    params = load_params(ROOT / "params.yaml")
    stuck = {"loss": math.log(10) + 0.01, "accuracy": 0.1, "val_loss": 2.3, "val_accuracy": 0.1}
    due = params.health.check_after_epochs
    check_learning("alexnet", due - 1, stuck, params.health, 10)  # too early to judge
    with pytest.raises(TrainingFailed) as err:
        check_learning("alexnet", due, stuck, params.health, 10)
    message = str(err.value)
    assert err.value.reason == "did not learn" and err.value.epoch == due
    for words in (
        "alexnet",
        f"epoch {due}",
        "2.3126",
        "ln(10) = 2.3026",
        "models.alexnet.learning_rate",
        "models.alexnet.input_scaling: standardize",
    ):
        assert words in message
    check_learning("alexnet", due, {**stuck, "loss": 1.9, "accuracy": 0.3}, params.health, 10)
    # a grid cell's fixes name its variant's keys, where the knobs of that cell live
    with pytest.raises(TrainingFailed) as err:
        check_learning("alexnet-tanh (seed 2)", due, stuck, params.health, 10, "ablations.variants.alexnet-tanh")
    assert "ablations.variants.alexnet-tanh.learning_rate" in str(err.value) and "models." not in str(err.value)


def test_epoch_data_depends_only_on_seed_and_epoch_and_augments():
    params = load_params(ROOT / "params.yaml")
    cfg = params.model("alexnet").replace(augment_crop_padding=2, augment_flip=True, augment_cutout=0)
    x = np.random.default_rng(0).integers(0, 255, (50, 32, 32, 3), dtype=np.uint8)
    y = np.arange(50)
    a, ya = epoch_data(x, y, cfg, 42, 3)
    b, yb = epoch_data(x, y, cfg, 42, 3)
    c, _ = epoch_data(x, y, cfg, 42, 4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a, c)
    assert a.shape == (50, 32, 32, 3) and a.dtype == np.float32
    plain, yp = epoch_data(x, y, cfg.replace(augment_crop_padding=0, augment_flip=False), 42, 3)
    np.testing.assert_array_equal(yp, ya)  # same shuffle either way
    np.testing.assert_array_equal(plain, x[yp].astype(np.float32))
    # every augmented image is its source shifted by <= 2 pixels and maybe mirrored
    for i in range(10):
        src = x[ya[i]].astype(np.float32)
        candidates = []
        for img in (src, src[:, ::-1]):
            padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
            candidates += [padded[dy : dy + 32, dx : dx + 32] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(a[i], cand) for cand in candidates)


def test_a_diverging_learning_rate_stops_the_stage_and_fails_the_run(prepared_project):
    project = prepared_project
    set_params(
        project,
        "alexnet",
        optimizer="sgd",
        learning_rate=10.0,
        momentum=0.9,
        epochs=3,
        schedule="constant",
        warmup_epochs=0,
    )
    result = stage("train", "alexnet", cwd=project, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    # TensorFlow's loss becomes nan; JAX's and PyTorch's clipped cross-entropy stays finite, far above ln(10)
    assert re.search(
        r"alexnet: (training loss became (nan|inf) at epoch 1, step \d+|diverged: after epoch 3 "
        r"the training loss is \d+\.\d+, more than twice ln\(10\))",
        result.stderr,
    ), result.stderr
    assert "lower models.alexnet.learning_rate" in result.stderr
    assert not (project / "models/alexnet/model.keras").exists()
    assert not (project / "reports/alexnet/history.csv").exists()
    assert not (project / "checkpoints/alexnet").exists()
    (failed,) = mlflow_runs(project)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"] in ("non-finite loss", "diverged")


def test_a_network_that_cannot_learn_fails_with_its_symptom(prepared_project):
    project = prepared_project
    set_params(
        project,
        learning_rate=1e-8,
        epochs=3,
        health={"check_after_epochs": 1, "loss_margin": 0.5, "accuracy_margin": 0.1},
    )
    result = run(["dvc", "repro", "train@lenet5"], project, check=False)
    assert result.returncode != 0
    assert "lenet5: did not learn: after epoch 1" in result.stdout + result.stderr
    assert not (project / "models/lenet5/model.keras").exists()
    (failed,) = mlflow_runs(project)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"] == "did not learn"
    assert failed.data.tags["failure_epoch"] == "1"


def test_kill_and_resume_gives_the_weights_of_an_uninterrupted_run_and_runs_repeat(prepared_project, monkeypatch):
    project = prepared_project
    set_params(project, epochs=3, learning_rate=0.001)
    trained = stage("train", "lenet5", cwd=project)
    assert trained.stderr == ""  # nothing but its own lines: no MLflow progress bars or warnings
    reference = weights(project)
    reference_bytes = (project / "models/lenet5/model.keras").read_bytes()
    reference_history = (project / "reports/lenet5/history.csv").read_text()
    assert not (project / "checkpoints/lenet5").exists()  # a finished run leaves no checkpoint

    # Determinism: the same params on the same machine give identical weights and metrics.
    (project / "models/lenet5/model.keras").unlink()
    stage("train", "lenet5", cwd=project)
    for a, b in zip(reference, weights(project), strict=False):
        np.testing.assert_array_equal(a, b)
    assert (project / "models/lenet5/model.keras").read_bytes() == reference_bytes  # same DVC hash
    assert (project / "reports/lenet5/history.csv").read_text() == reference_history  # no wall times in it

    kill_twice(project, monkeypatch)
    resumed = run(["dvc", "repro", "train@lenet5"], project)
    assert "resuming after epoch 1" in resumed.stdout
    for a, b in zip(reference, weights(project), strict=False):
        np.testing.assert_array_equal(a, b)
    assert (project / "models/lenet5/model.keras").read_bytes() == reference_bytes
    assert not (project / "checkpoints/lenet5").exists()
    runs = mlflow_runs(project)
    statuses = [r.info.status for r in runs]
    assert statuses.count("FINISHED") == 3  # two whole runs, and the killed one resumed to the end
    assert statuses.count("KILLED") == 1  # the run with other params, stopped by SIGTERM
    resumed_run = runs[-1]
    history = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").get_metric_history(
        resumed_run.info.run_id, "val_accuracy"
    )
    assert [m.step for m in history] == [1, 2, 3]  # each epoch once


def kill_twice(project, monkeypatch) -> None:
    """SIGTERM ends the run as KILLED (not left RUNNING) and keeps the checkpoint; a checkpoint from
    other params is not resumed from. Then kill -9 after epoch 2 was logged to MLflow, before its
    checkpoint: the resumed run repeats epoch 2 but logs it only once."""
    monkeypatch.setenv(KILL_AFTER_EPOCH_ENV, "1")
    monkeypatch.setenv(KILL_SIGNAL_ENV, "SIGTERM")
    set_params(project, epochs=3, learning_rate=0.002)
    killed = stage("train", "lenet5", cwd=project, check=False)
    assert killed.returncode == 143
    assert mlflow_runs(project)[-1].info.status == "KILLED"
    assert json.loads((project / "checkpoints/lenet5/meta.json").read_text())["epoch"] == 1
    monkeypatch.delenv(KILL_SIGNAL_ENV)
    set_params(project, epochs=3, learning_rate=0.001)
    monkeypatch.setenv(KILL_AFTER_EPOCH_ENV, "2")
    monkeypatch.setenv(KILL_BEFORE_CHECKPOINT_ENV, "1")
    killed = stage("train", "lenet5", cwd=project, check=False)
    assert "other params or data: not resuming" in killed.stdout
    assert killed.returncode == -9
    assert json.loads((project / "checkpoints/lenet5/meta.json").read_text())["epoch"] == 1

    monkeypatch.delenv(KILL_AFTER_EPOCH_ENV)
    monkeypatch.delenv(KILL_BEFORE_CHECKPOINT_ENV)


def test_recipe_knobs_train(prepared_project):
    project = prepared_project
    set_params(
        project,
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        weight_decay=0.0005,
        schedule="cosine",
        warmup_epochs=1,
        label_smoothing=0.1,
        epochs=3,
        early_stopping_patience=1,
        augment_crop_padding=2,
        augment_flip=True,
        batch_norm=True,
        kernel_initializer="he_normal",
        steps_per_execution=4,
        mixed_precision=True,
    )
    result = stage("train", "lenet5", cwd=project)
    summary = json.loads((project / "reports/lenet5/training.json").read_text())
    assert summary["epochs"] <= 3 and "best_epoch" in summary
    table = (project / "reports/lenet5/architecture.csv").read_text()
    assert "C1_bn" in table
    assert "lenet5 epoch 1/3" in result.stdout
