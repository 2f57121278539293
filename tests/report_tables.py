"""Read the tables of reports/report.md and reports/costs.md back and compare every number in them
with the file it came from (used on fixture outputs and on a real pipeline's)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def table_after(md: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after `heading`, its header first."""
    lines = md[md.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def by_label(rows: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in rows[1:]}


def shown(cell: str) -> list[str]:
    return NUMBER.findall(cell)


def assert_shows(cell: str, *values: float) -> None:
    """The cell's numbers are `values`, each to the precision it is written with."""
    numbers = shown(cell)
    assert len(numbers) == len(values), (cell, values)
    for text, value in zip(numbers, values, strict=True):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(float(text.replace(",", "")) - value) <= 0.5 * 10**-decimals + 1e-9, (cell, value)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_side_by_side_matches(root: Path, names: list[str], datasets: list[str]) -> None:
    """Each number of report.md's side-by-side table equals its source file's."""
    table = by_label(table_after((root / "reports/report.md").read_text(), "## Side by side"))
    for i, (name, dataset) in enumerate(zip(names, datasets, strict=True)):
        folder = root / "reports" / name
        metrics, details = _json(folder / "metrics.json"), _json(folder / "evaluation.json")
        training, data = _json(folder / "training.json"), _json(root / f"data/prepared/{dataset}.json")
        arch = pd.read_csv(folder / "architecture.csv")
        views = {**metrics, **details}.get("test_views", 1)
        accuracy = [100 * metrics["test_accuracy"], details["test_images"]]
        if views > 1:
            accuracy += [views, 100 * metrics["test_accuracy_single_view"]]
        assert_shows(table["Test accuracy"][i], *accuracy)
        assert_shows(table["Test loss"][i], metrics["test_loss"])
        assert_shows(table["Macro F1"][i], metrics["test_macro_f1"])
        assert_shows(table["Parameters"][i], training["parameters"])
        assert_shows(table["Multiply-adds per image (forward)"][i], arch["multiply_adds"].sum())
        assert_shows(table["Layers with weights"][i], (arch["parameters"] > 0).sum())
        assert_shows(table["Training images"][i], data["sizes"]["train"])
        assert_shows(table["Epochs"][i], training["epochs"])
        assert_shows(table["Model size on disk"][i], details["model_size_mb"])
        assert_shows(table["Input"][i], *data["shape"])
        assert table["Dataset"][i] == data["provenance"]["title"]


def assert_costs_match(root: Path, names: list[str]) -> None:
    """Each number of costs.md's per-model table equals its cost record's (reports/costs/)."""
    table = by_label(table_after((root / "reports/costs.md").read_text(), "# What the runs cost"))
    for i, name in enumerate(names):
        train, evaluate = (
            _json(root / f"reports/costs/train-{name}.json"),
            _json(root / f"reports/costs/evaluate-{name}.json"),
        )
        details = _json(root / f"reports/{name}/evaluation.json")
        assert_shows(table["Training"][i], train["train_seconds"], train["train_images_per_second"])
        epochs = sorted(train.get("epoch_seconds", []))
        if epochs:
            assert_shows(table["Epoch (median)"][i], epochs[len(epochs) // 2])
        assert_shows(
            table["Inference"][i],
            evaluate["inference_images_per_second"],
            details["inference_batch_size"],
            evaluate["latency_ms_per_image"],
        )
        memory = [train[k] for k in ("peak_rss_mb",) if k in train] + [
            evaluate[k] for k in ("inference_peak_rss_mb",) if k in evaluate
        ]
        assert_shows(table["Peak memory (process RSS)"][i], *memory)
        assert table["Device (training)"][i] == train["device"]
        assert table["Keras backend (training)"][i] == train.get("keras_backend", "not recorded")
        assert table["Precision (training)"][i] == train.get("precision", "not recorded")


def assert_gpu_table_matches(root: Path, titles: dict[str, str]) -> None:
    """Each row of costs.md's GPU table equals its record: the pipeline's runs' (reports/costs/), then the
    device check's (bench/results/)."""
    rows = table_after((root / "reports/costs.md").read_text(), "## Did GPUs matter?")[1:]
    gpu_rows = rows[len(titles) :]
    for row, name in zip(rows, titles, strict=False):
        train = _json(root / f"reports/costs/train-{name}.json")
        assert row[0] == titles[name] and row[2] == train["device"]
        assert_shows(row[6], train["train_images_per_second"])
        assert_shows(row[8], train["train_seconds"])
    expected = [
        (record, m)
        for path in sorted((root / "bench/results").glob("device-*.json"))
        for record in [_json(path)]
        if record["device"].startswith("GPU")
        for m in record["models"]
        if m["model"] in titles
    ]
    assert len(gpu_rows) == len(expected)
    for row, (record, m) in zip(gpu_rows, expected, strict=True):
        assert row[:4] == [titles[m["model"]], m.get("dataset", "not recorded"), record["device"], m["backend"]]
        assert_shows(row[4], m["epochs"])
        assert_shows(row[5], m["epoch_seconds"])
        assert_shows(row[6], m["images_per_second"])
        assert_shows(row[7], 100 * m["peak_fraction"])
        assert_shows(row[8], m["train_seconds"])
        assert_shows(row[9], *([100 * m["test_accuracy"]] + ([m["test_views"]] if m["test_views"] > 1 else [])))
