"""The report, built from fixture outputs in the stages' formats: every number comes from the files."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from classic_cnns.model.networks import build, layer_table
from classic_cnns.params import load_params
from classic_cnns.reporting import costs_page
from stages import report, section
from tests.projects import ROOT
from tests.report_tables import assert_costs_match, assert_gpu_table_matches, assert_side_by_side_matches

CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def write_fixture_outputs(root, accuracies):
    params = load_params(ROOT / "params.yaml")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    rng = np.random.default_rng(0)
    for name, cfg in params.models.items():
        shape = (32, 32, 1) if cfg.dataset == "mnist" else (32, 32, 3)
        y_test = write_prepared(root, cfg.dataset, shape, rng)
        model = build(cfg.architecture, shape, [0.0] * shape[-1], [1.0] * shape[-1])
        about = costs_page.about(name, cfg)
        write_training_outputs(root, name, model, about)
        write_evaluation_outputs(root, name, CLASSES[cfg.dataset], y_test, accuracies[name])


def write_prepared(root, dataset: str, shape: tuple, rng) -> np.ndarray:
    """data/prepared/<dataset>: 40 test images and their description; returns the test labels."""
    prepared = root / "data/prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    y_test = np.arange(40) % 10
    np.savez(
        prepared / f"{dataset}.npz",
        x_test=rng.integers(0, 255, (40, *shape), dtype=np.uint8),
        y_test=y_test.astype(np.uint8),
    )
    (prepared / f"{dataset}.json").write_text(
        json.dumps(
            {
                "dataset": dataset,
                "classes": CLASSES[dataset],
                "shape": list(shape),
                "sizes": {"train": 1000, "val": 100, "test": 40},
                "provenance": {
                    "dataset": dataset,
                    "title": f"{dataset} fixture",
                    "official": dataset == "mnist",
                    "source": "official" if dataset == "mnist" else "/copies/c.npz",
                    "files": {"f.gz": "ab" * 32},
                },
            }
        )
    )
    return y_test


def write_training_outputs(root, name: str, model, about: dict) -> None:
    (root / "models" / name).mkdir(parents=True)
    model.save(root / "models" / name / "model.keras")
    out = root / "reports" / name
    out.mkdir(parents=True)
    layer_table(model).to_csv(out / "architecture.csv", index=False)
    pd.DataFrame(
        {
            "epoch": [1, 2],
            "loss": [1.0, 0.5],
            "accuracy": [0.6, 0.8],
            "val_loss": [1.1, 0.6],
            "val_accuracy": [0.55, 0.75],
        }
    ).to_csv(out / "history.csv", index=False)
    (out / "training.json").write_text(
        json.dumps(
            {
                "epochs": 2,
                "final_train_accuracy": 0.8,
                "final_val_accuracy": 0.75,
                "parameters": model.count_params(),
            }
        )
    )
    (root / "reports/costs").mkdir(exist_ok=True)
    (root / f"reports/costs/train-{name}.json").write_text(
        json.dumps(
            {
                "train_seconds": 12.5,
                "train_images_per_second": 160.0,
                "epoch_seconds": [7.25, 5.25],
                "device": "CPU: fixture",
                "keras_backend": "tensorflow",
                "peak_rss_mb": 1234.5,
                **about,
            }
        )
    )


def write_evaluation_outputs(root, name: str, classes: list[str], y_test: np.ndarray, accuracy: float) -> None:
    out = root / "reports" / name
    (root / f"reports/costs/evaluate-{name}.json").write_text(
        json.dumps(
            {
                "inference_images_per_second": 1000.0,
                "latency_ms_per_image": 1.5,
                "device": "CPU: fixture",
                "inference_peak_rss_mb": 987.0,
            }
        )
    )
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy, "test_loss": 0.5, "test_macro_f1": 0.7}))
    (out / "evaluation.json").write_text(
        json.dumps({"test_images": 40, "inference_batch_size": 64, "model_size_mb": 3.0})
    )
    predicted = y_test.copy()
    predicted[:4] = (predicted[:4] + 1) % 10
    pd.DataFrame({"actual": np.array(classes)[y_test], "predicted": np.array(classes)[predicted]}).to_csv(
        out / "predictions.csv", index=False
    )
    pd.DataFrame({"class": classes, "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 4}).to_csv(
        out / "per_class.csv", index=False
    )
    matrix = np.eye(10, dtype=int) * 4
    pd.DataFrame(matrix, index=pd.Index(classes, name="actual"), columns=classes).to_csv(out / "confusion.csv")


def build_report() -> int:
    """What `dvc repro report` runs: each model's section (stage `section`), then the report."""
    for name in load_params("params.yaml").models:
        assert section.main([name]) == 0
    return report.main([])


@pytest.fixture
def fixture_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.mark.slow  # builds the report: sections, figures, MLflow
def test_report_is_built_from_the_metrics_files(fixture_root):
    write_fixture_outputs(fixture_root, {"lenet5": 0.9912, "alexnet": 0.8534})
    assert build_report() == 0
    md = (fixture_root / "reports/report.md").read_text()
    assert "99.12%" in md and "85.34%" in md
    assert "61,706" in md
    assert "non-official" in md and "cifar10 fixture" in md
    for heading in (
        "1. LeNet-5's architecture",
        "2. Its components",
        "3. LeNet-5's limitations",
        "4. AlexNet's architecture",
        "5. How the two compare",
    ):
        assert md.count(heading) == 1
    assert "C1 28x28x6, S2 14x14x6, C3 10x10x16, S4 5x5x16" in md
    assert "| C3 | Conv2D | tanh | 10x10x16 | 2,416 | 240,000 | 14x14 |" in md
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(images) >= 10
    for image in images:
        assert (fixture_root / "reports" / image).stat().st_size > 0
    assert_html_is_the_markdown_self_contained((fixture_root / "reports/report.html").read_text(), images)
    assert_classes_models_and_architectures_are_named(md)
    assert_side_by_side_matches(fixture_root, ["lenet5", "alexnet"], ["mnist", "cifar10"])


@pytest.mark.slow  # builds the report: sections, figures, MLflow
def test_the_report_holds_results_and_costs_md_holds_costs(fixture_root):
    """DVC hashes report.md, so no timing is in it; costs.md (not a DVC output) holds each record's."""
    write_fixture_outputs(fixture_root, {"lenet5": 0.9912, "alexnet": 0.8534})
    assert build_report() == 0
    md = (fixture_root / "reports/report.md").read_text()
    for cost in ("12.5 s", "160 images/s", "1,000 images/s", "1.50 ms", "1,234 MB", "CPU: fixture"):
        assert cost not in md
    assert "[costs.md](costs.md)" in md and "[costs.md](costs.md#how-the-two-compare-in-cost)" in md
    assert_costs_match(fixture_root, ["lenet5", "alexnet"])
    costs = (fixture_root / "reports/costs.md").read_text()
    assert "## How the two compare in cost" in costs and "Did GPUs matter" not in costs
    assert "AlexNet trained at 160 images/s against LeNet-5's 160" in costs and "different devices" not in costs
    assert "<h2 id='how-the-two-compare-in-cost'>" in (fixture_root / "reports/costs.html").read_text().replace(
        '"', "'"
    )

    # a changed record changes costs.md and nothing in report.md
    before = md
    record = json.loads((fixture_root / "reports/costs/train-alexnet.json").read_text())
    record.update(train_seconds=99.0, train_images_per_second=20.2, device="CPU: other")
    (fixture_root / "reports/costs/train-alexnet.json").write_text(json.dumps(record))
    assert build_report() == 0
    assert (fixture_root / "reports/report.md").read_text() == before
    assert_costs_match(fixture_root, ["lenet5", "alexnet"])
    assert "(on different devices)" in (fixture_root / "reports/costs.md").read_text()


def test_costs_md_says_what_is_not_recorded(fixture_root):
    write_fixture_outputs(fixture_root, {"lenet5": 0.9912, "alexnet": 0.8534})
    (fixture_root / "reports/costs/evaluate-alexnet.json").unlink()
    costs_page.write()
    table = (fixture_root / "reports/costs.md").read_text()
    assert "| Inference | 1,000 images/s (batch 64); 1.50 ms for one image | not recorded |" in table
    assert "How the two compare in cost" not in table
    for name in ("lenet5", "alexnet"):
        (fixture_root / f"reports/costs/train-{name}.json").unlink(missing_ok=True)
        (fixture_root / f"reports/costs/evaluate-{name}.json").unlink(missing_ok=True)
    costs_page.write()
    assert "No training has recorded its costs yet: run `dvc repro`." in (fixture_root / "reports/costs.md").read_text()


def assert_html_is_the_markdown_self_contained(html: str, images: list[str]) -> None:
    assert html.count("data:image/png;base64,") == len(images)
    assert "<img" in html and "src='figures/" not in html  # self-contained
    # Markdown is rendered, not shown raw; classes are named as the data names them
    assert "<em>Data provenance</em>" in html and "*Data provenance*" not in html
    assert "<code>dvc repro ablations/dvc.yaml</code>" in html and "`" not in html


def assert_classes_models_and_architectures_are_named(md: str) -> None:
    assert "(official files) (official" not in md and "checksums verified against the pinned ones" in md
    assert " 1 warm-up epochs" not in md
    assert "| 0 | 0.900 | 0.800 | 0.850 | 4 |" in md and "| 0.0 |" not in md
    assert "| airplane | 0.900 |" in md
    # each heading names model and dataset once
    assert "## LeNet-5 on mnist fixture" in md and "## AlexNet on cifar10 fixture" in md
    assert "lenet5: lenet5" not in md
    # AlexNet for ImageNet, from built models, beside the trained adaptation
    assert "## AlexNet for ImageNet and for 32x32 images" in md
    assert "60,965,224 parameters" in md and "25,678,184 parameters" in md
    assert "| pool3 | 6x6x256, 0 | 1x1x256, 0 | 1x1x256, 0 |" in md
    assert "/copies/" not in md  # a local copy is named by its sha256, not a machine's path


@pytest.mark.slow  # builds the report several times
def test_the_report_follows_the_files_it_is_built_from(fixture_root):
    write_fixture_outputs(fixture_root, {"lenet5": 0.9912, "alexnet": 0.8534})
    # change a metric, the report changes with it
    metrics = json.loads((fixture_root / "reports/alexnet/metrics.json").read_text())
    metrics["test_accuracy"] = 0.4321
    (fixture_root / "reports/alexnet/metrics.json").write_text(json.dumps(metrics))
    assert build_report() == 0
    md = (fixture_root / "reports/report.md").read_text()
    assert "43.21%" in md and "85.34%" not in md and "views" not in md

    # test-time augmentation is named, with the single-view accuracy beside it
    metrics.update(test_views=10, test_accuracy_single_view=0.4123)
    (fixture_root / "reports/alexnet/metrics.json").write_text(json.dumps(metrics))
    assert build_report() == 0
    md = (fixture_root / "reports/report.md").read_text()
    assert (
        "43.21% (of 40 images); averaged over 10 views of each image (test-time augmentation), single view 41.23%" in md
    )

    assert_side_by_side_matches(fixture_root, ["lenet5", "alexnet"], ["mnist", "cifar10"])
    assert_the_gpu_section_compares_only_like_with_like(fixture_root)


GPU_RUN = {"model": "alexnet", "dataset": "cifar10 fixture", "backend": "jax", "epochs": 2, "epoch_seconds": 0.5,
           "images_per_second": 3200.0, "peak_fraction": 0.12, "train_seconds": 3.0, "test_accuracy": 0.9,
           "test_views": 10}  # fmt: skip


def gpu_section(root, **run) -> str:
    """costs.md's GPU section with one device check run (bench/results/) beside the pipeline's trainings."""
    (root / "bench/results").mkdir(parents=True, exist_ok=True)
    record = {"device": "GPU: Fixture 1", "models": [{**GPU_RUN, **run}]}
    (root / "bench/results/device-jax.json").write_text(json.dumps(record))
    assert build_report() == 0
    assert "Did GPUs matter" not in (root / "reports/report.md").read_text()
    assert_gpu_table_matches(root, {"lenet5": "LeNet-5", "alexnet": "AlexNet"})
    md = (root / "reports/costs.md").read_text()
    return md[md.index("## Did GPUs matter?") :]


def assert_the_gpu_section_compares_only_like_with_like(root) -> None:
    same = gpu_section(root)
    assert "20x the pipeline's images per second, the whole training in 3 s against 12 s" in same  # 3200 / 160
    assert (
        "| AlexNet | cifar10 fixture | GPU: Fixture 1 | jax | 2 | 0.50 s | 3,200 | 12.0% | 3 s | 90.00% (10 views) |"
        in same
    )
    assert "| AlexNet | cifar10 fixture | CPU: fixture |" in same
    for other in ({"epochs": 3}, {"dataset": "MNIST (official files)"}, {"train_images": 999}):
        section = gpu_section(root, **other)
        assert "x the pipeline's" not in section and "): ." not in section and ": ." not in section
        assert "none of them on the same data for the same epochs" in section


def test_missing_inputs_name_the_stage_to_run(fixture_root, capsys):
    write_fixture_outputs(fixture_root, {"lenet5": 0.99, "alexnet": 0.85})
    metrics = fixture_root / "reports/alexnet/metrics.json"
    kept = metrics.read_bytes()
    metrics.unlink()
    assert section.main(["lenet5"]) == 0
    for stage in (lambda: section.main(["alexnet"]), lambda: report.main([])):
        assert stage() == 2
        assert "reports/alexnet lacks metrics.json: run `dvc repro` (train@alexnet and evaluate@alexnet)" in (
            capsys.readouterr().err
        )
    metrics.write_bytes(kept)  # the outputs whole, but no section of AlexNet yet
    assert report.main([]) == 2
    assert "reports/sections/alexnet lacks section.md or summary.json: run `dvc repro section@alexnet`" in (
        capsys.readouterr().err
    )


def test_a_recipe_counts_its_warm_up_epochs_in_words():
    from classic_cnns.reporting.describe import recipe

    alexnet = load_params(ROOT / "params.yaml").model("alexnet")
    assert "after 1 warm-up epoch;" in recipe(alexnet.replace(warmup_epochs=1))
    assert "after 3 warm-up epochs;" in recipe(alexnet.replace(warmup_epochs=3))


def test_a_models_figures_are_its_own_not_those_of_a_model_named_after_it(tmp_path, monkeypatch):
    """The report stage attached every lenet5-*.png to LeNet-5's run, lenet5-fashion's figures included."""
    from classic_cnns.reporting import figures

    monkeypatch.chdir(tmp_path)
    for name in ("lenet5-confusion.png", "lenet5-filters.png", "lenet5-fashion-confusion.png", "alexnet-confusion.png"):
        model = name.rsplit("-", 1)[0]
        (tmp_path / "reports/sections" / model).mkdir(parents=True, exist_ok=True)
        (tmp_path / "reports/sections" / model / name).write_bytes(b"png")
    assert [p.name for p in figures.of_model("lenet5")] == ["lenet5-confusion.png", "lenet5-filters.png"]
    assert [p.name for p in figures.of_model("lenet5-fashion")] == ["lenet5-fashion-confusion.png"]


def test_a_model_named_after_its_dataset_is_not_named_twice_in_mlflow():
    from classic_cnns.tracking.runs import model_name

    assert model_name("lenet5", "mnist") == "lenet5-mnist"
    assert model_name("lenet5-fashion", "fashion") == "lenet5-fashion"  # not lenet5-fashion-fashion
    assert model_name("alexnet-mnist", "cifar10") == "alexnet-mnist-cifar10"


def test_the_cost_comparison_is_of_the_notebooks_two_models_only():
    """A LeNet-5 on a user's dataset trained last must not stand in for the notebook's LeNet-5
    ("AlexNet infers at 1,961 against 900 images/s" used the Fashion run's numbers)."""

    def record(arch, train, infer, latency):
        return {
            "architecture": arch,
            "training": {"train_images_per_second": train, "device": "CPU"},
            "metrics": {"inference_images_per_second": infer, "latency_ms_per_image": latency},
        }

    records = {
        "lenet5": record("lenet5", 5000, 12000, 3.5),
        "alexnet": record("alexnet", 550, 1961, 9.1),
        "lenet5-fashion": record("lenet5", 4000, 900, 4.0),
    }
    (heading, (kind, text)) = costs_page.compare_blocks(records)
    assert heading == ("h2", "How the two compare in cost") and kind == "p"
    assert "against LeNet-5's 5,000" in text and "1,961 against 12,000 images/s" in text and "900" not in text
    del records["lenet5"]
    assert costs_page.compare_blocks(records) == []  # no notebook LeNet-5 here: no comparison


def test_the_notebooks_questions_are_answered_about_its_two_models_only(monkeypatch):
    """The five questions described LeNet-5 through a 3-epoch run of a LeNet-5 on Fashion-MNIST."""
    from types import SimpleNamespace

    from classic_cnns.reporting import questions

    seen = []
    monkeypatch.setattr(questions, "_lenet_answers", lambda le, al: seen.append((le["name"], al["name"])) or [])
    monkeypatch.setattr(questions, "_alexnet_answers", lambda le, al: [])
    results = {
        name: {"name": name, "config": SimpleNamespace(architecture=arch)}
        for name, arch in (("lenet5", "lenet5"), ("alexnet", "alexnet"), ("lenet5-fashion", "lenet5"))
    }
    assert questions.question_blocks(results)[0][0] == "h2"
    assert seen == [("lenet5", "alexnet")]
    del results["lenet5"]
    assert questions.question_blocks(results) == []
