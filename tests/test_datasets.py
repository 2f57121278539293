"""The dataset registry: declared layouts are checked, and a user's own dataset, added with one
params entry, is named by its own title and class names everywhere."""

import json
import re

import mlflow
import numpy as np
import pytest
import yaml

from classic_cnns.data.datasets import REGISTRY, DatasetError, check, get
from classic_cnns.params import DataSource
from tests.projects import run


@pytest.mark.parametrize("shape", [(4, 28, 28, 3), (4, 32, 32, 1), (4, 32, 32)])
def test_images_of_another_shape_than_declared_are_refused(shape):
    x = np.zeros(shape, np.uint8)
    with pytest.raises(DatasetError, match=r"expected \(32, 32, 3\)"):
        check(REGISTRY["cifar10"], x, np.zeros(4, np.uint8), "train")


def test_labels_pixels_and_counts_are_checked():
    cifar = REGISTRY["cifar10"]
    x = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(DatasetError, match="labels must be whole numbers 0..9"):
        check(cifar, x, np.array([0, 1, 2, 10]), "train")
    with pytest.raises(DatasetError, match="4 images but 3 labels"):
        check(cifar, x, np.zeros(3, np.uint8), "train")
    with pytest.raises(DatasetError, match="float32"):
        check(cifar, x.astype(np.float32), np.zeros(4, np.uint8), "test")


def test_only_a_dataset_declared_so_is_padded():
    x = np.full((2, 28, 28), 7, np.uint8)
    padded, _ = check(REGISTRY["mnist"], x, np.zeros(2, np.uint8), "train")
    assert padded.shape == (2, 32, 32, 1) and padded[:, :2].max() == 0
    own = get("digits", DataSource(source="d.npz", title="Digits", classes=list("0123456789"), image_shape=[28, 28, 1]))
    assert check(own, x, np.zeros(2, np.uint8), "train")[0].shape == (2, 28, 28, 1)


SHAPES = ["circle", "square", "cross"]


def write_shapes(path) -> None:
    """A tiny 3-class dataset of 16x16 colour images in keras.datasets layout: a bright band per class."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 3
        x = rng.integers(0, 40, (n, 16, 16, 3)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, :, 5 * label : 5 * label + 5] += 200
        return x, y.astype(np.uint8)

    (x_train, y_train), (x_test, y_test) = split(150), split(60)
    path.parent.mkdir(parents=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def with_shapes(project) -> dict:
    """The project's params with the tiny shapes dataset as a `data:` entry (a local copy, as the
    README says), its file written under data/external/."""
    write_shapes(project / "data/external/shapes.npz")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["shapes"] = {
        "source": "data/external/shapes.npz",
        "title": "Tiny shapes",
        "classes": SHAPES,
        "image_shape": [16, 16, 3],
        "pad": 2,
    }
    return params


def test_a_users_dataset_is_named_by_its_own_title_and_classes(pipeline_copy):
    project = pipeline_copy  # the default pipeline done: only the new dataset's stages and their readers run
    classes = SHAPES
    params = with_shapes(project)
    params["models"]["lenet5"]["dataset"] = "shapes"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = run(["dvc", "repro"], project).stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {
        "download@shapes",
        "prepare@shapes",
        "train@lenet5",
        "evaluate@lenet5",
        "section@lenet5",
        "report",
    }
    assert "lenet5: lenet5 on Tiny shapes (non-official local copy)" in out
    meta = json.loads((project / "data/prepared/shapes.json").read_text())
    assert meta["title"] == "Tiny shapes" and meta["classes"] == classes and meta["shape"] == [20, 20, 3]

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    lenet, _mnist = client.search_runs(
        [client.get_experiment_by_name("classic-cnns").experiment_id],
        filter_string="tags.model = 'lenet5'",
        order_by=["attributes.start_time DESC"],
    )
    assert lenet.data.tags["dataset_title"] == "Tiny shapes (non-official local copy)"
    assert lenet.info.run_name == "lenet5-shapes"
    assert_the_report_names_only_the_users_dataset((project / "reports/report.md").read_text())

    params["data"]["shapes"]["source"] = str(project / "data/external/shapes.npz")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = run(["dvc", "repro", "download@shapes"], project, check=False)
    assert refused.returncode != 0 and "name it relative to the project" in refused.stdout + refused.stderr


def assert_the_report_names_only_the_users_dataset(report: str) -> None:
    assert "## LeNet-5 on Tiny shapes (non-official local copy)" in report
    assert re.search(r"\| circle \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 20 \|", report)
    assert "LeNet-5 scores" in report and "on Tiny shapes (non-official local copy) and AlexNet" in report
    assert "MNIST" not in report and "LeCun" not in report  # no dataset or paper the run did not use


def test_a_third_model_on_a_users_dataset_gets_its_own_section_names_and_figures(pipeline_copy):
    """The README's steps alone: a `data:` entry, a `models:` entry beside the notebook's two and its
    test-time augmentation. DVC runs only the new model's stages and the report (whose inputs are
    every model's section); nothing of it is mixed with MNIST's LeNet-5."""
    project = pipeline_copy
    params = with_shapes(project)
    params["models"]["lenet5-shapes"] = {**params["models"]["lenet5"], "dataset": "shapes"}
    params["evaluate"]["test_time_augmentation"]["lenet5-shapes"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    report_before = (project / "reports/report.md").read_text()

    out = run(["dvc", "repro"], project).stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {
        "download@shapes",
        "prepare@shapes",
        "train@lenet5-shapes",
        "evaluate@lenet5-shapes",
        "section@lenet5-shapes",
        "report",
    }
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], project).stdout

    report = (project / "reports/report.md").read_text()
    own = report[report.index("## LeNet-5 (lenet5-shapes) on Tiny shapes (non-official local copy)") :]
    own = own[: own.index("\n## ", 1)]
    assert re.search(r"\| circle \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 20 \|", own)
    assert "](sections/lenet5-shapes/lenet5-shapes-confusion.png)" in own and "MNIST" not in own
    # MNIST's LeNet-5 keeps its section and the notebook's questions, word for word
    mnist = report_before[report_before.index("## LeNet-5 on ") :]
    mnist = mnist[: mnist.index("\n## ", 1)]
    assert mnist in report
    questions = report_before[report_before.index("## The notebook's five questions") :]
    assert questions[: questions.index("\n## ", 1)] in report
    assert "Tiny shapes" in report[: report.index("## The notebook's five questions")]  # its side-by-side column

    costs = (project / "reports/costs.md").read_text()
    assert "Tiny shapes" in costs

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classic-cnns").experiment_id
    (run_,) = client.search_runs([experiment], filter_string="tags.model = 'lenet5-shapes'")
    assert run_.info.run_name == "lenet5-shapes" and run_.info.status == "FINISHED"
    (version,) = client.search_model_versions("name = 'lenet5-shapes'")
    assert version.run_id == run_.info.run_id
    figures = {a.path for a in client.list_artifacts(run_.info.run_id, "figures")}
    assert "figures/lenet5-shapes-confusion.png" in figures
    assert all(f.startswith("figures/lenet5-shapes-") for f in figures)
    (mnist_run,) = client.search_runs([experiment], filter_string="tags.model = 'lenet5'")
    assert not [a for a in client.list_artifacts(mnist_run.info.run_id, "figures") if "shapes" in a.path]
