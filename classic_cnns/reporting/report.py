"""The report's content: every number read from the stages' output files, as render blocks.

Sections: side by side, the notebook's five questions (classic_cnns/reporting/questions.py, about
the `models` entries lenet5 and alexnet), one section per model (layers, learning curves, confusion
matrix, per-class scores, misclassified images, filters: written by stage `section@<name>`,
classic_cnns/reporting/section.py), AlexNet for ImageNet against the CIFAR-10 adaptation
(classic_cnns/model/architectures.py), the diagnosis of the notebook's AlexNet, the claims, and data
provenance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from classic_cnns import outputs, paths
from classic_cnns.model import architectures
from classic_cnns.reporting import describe, figures, questions

OUTPUTS = (
    "metrics.json",
    "evaluation.json",
    "training.json",
    "history.csv",
    "architecture.csv",
    "per_class.csv",
    "confusion.csv",
    "predictions.csv",
)


def load_results(models: dict) -> dict[str, dict]:
    """Everything the report says, per model, read from the stages' output files."""
    results = {}
    for name, cfg in models.items():
        folder = paths.model_reports(name)
        missing = [f for f in OUTPUTS if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(
                f"{folder} lacks {', '.join(missing)}: run `dvc repro` "
                f"(train@{name} and evaluate@{name}) before the report"
            )
        labels = {"class": str, "actual": str, "predicted": str}
        r = {
            "name": name,
            "config": cfg,
            # results only: what a run cost is in reports/costs.md (classic_cnns/reporting/costs_page.py)
            "metrics": {
                **json.loads((folder / "metrics.json").read_text()),
                **json.loads((folder / "evaluation.json").read_text()),
            },
            "training": json.loads((folder / "training.json").read_text()),
            "history": pd.read_csv(folder / "history.csv"),
            "architecture": pd.read_csv(folder / "architecture.csv", keep_default_na=False),
            "per_class": pd.read_csv(folder / "per_class.csv", dtype=labels),
            "confusion": pd.read_csv(folder / "confusion.csv", index_col=0, dtype={"actual": str}),
            "data": json.loads(paths.prepared(cfg.dataset)[1].read_text()),
            "predictions": pd.read_csv(folder / "predictions.csv", dtype=labels),
            "model_file": paths.model_file(name),
        }
        r["title"] = describe.title(name, cfg)
        r["dataset"] = r["data"]["provenance"]["title"]
        r["details"] = model_details(r["model_file"], f"train@{name}")
        results[name] = r
    return results


def receptive_fields(model) -> dict[str, str]:
    """Each layer's receptive field on the input image (square kernels and strides)."""
    size, jump, fields = 1, 1, {}
    full = model.input_shape[1]
    for layer in model.layers[1:]:
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        if kernel is not None:
            strides = getattr(layer, "strides", None) or kernel
            size += (kernel[0] - 1) * jump
            jump *= strides[0]
        elif layer.__class__.__name__ in ("Flatten", "Dense"):
            size = full
        fields[layer.name] = f"{min(size, full)}x{min(size, full)}"
    return fields


def model_details(model_file: Path, made_by: str) -> dict:
    """What the report needs from the trained model itself: receptive fields, first-layer filters."""
    model = outputs.load_keras_model(model_file, made_by, compile=False)
    first_conv = next(layer for layer in model.layers if hasattr(layer, "kernel") and len(layer.kernel.shape) == 4)
    return {"receptive_fields": receptive_fields(model), "first_kernel": np.asarray(first_conv.kernel)}


def misclassified_examples(r: dict, count: int = 16):
    with np.load(paths.prepared(r["config"].dataset)[0]) as npz:
        x_test = npz["x_test"]
    pred = r["predictions"]
    wrong = np.flatnonzero((pred["actual"] != pred["predicted"]).to_numpy())
    # evenly spread over the test set, which may be grouped by class
    wrong = (
        wrong[np.unique(np.linspace(0, len(wrong) - 1, min(count, len(wrong))).astype(int))] if len(wrong) else wrong
    )
    return x_test[wrong], pred["actual"].iloc[wrong].tolist(), pred["predicted"].iloc[wrong].tolist()


SIDE_BY_SIDE = [
    ("Architecture", lambda r: r["title"]),
    ("Dataset", lambda r: r["dataset"]),
    ("Input", lambda r: "x".join(map(str, r["data"]["shape"]))),
    ("Activation / pooling", lambda r: "{activation} / {pooling}".format(**describe.choices(r["config"]))),
    ("Regularisation", lambda r: describe.regularisation(r["config"])),
    ("Layers with weights", lambda r: str(int((r["architecture"]["parameters"] > 0).sum()))),
    ("Parameters", lambda r: f"{r['training']['parameters']:,}"),
    ("Multiply-adds per image (forward)", lambda r: f"{int(r['architecture']['multiply_adds'].sum()):,}"),
    ("Training images", lambda r: f"{r['data']['sizes']['train']:,}"),
    ("Recipe", lambda r: describe.recipe(r["config"])),
    ("Additions to the architecture", lambda r: describe.additions(r["config"])),
    ("Epochs", lambda r: str(r["training"]["epochs"])),
    ("Test accuracy", lambda r: describe.test_accuracy(r["metrics"])),
    ("Test loss", lambda r: f"{r['metrics']['test_loss']:.4f}"),
    ("Macro F1", lambda r: f"{r['metrics']['test_macro_f1']:.4f}"),
    ("Model size on disk", lambda r: f"{r['metrics']['model_size_mb']:.1f} MB (.keras, with optimizer state)"),
]


def model_blocks(r: dict) -> list[tuple]:
    name, arch, fields = r["name"], r["architecture"], r["details"]["receptive_fields"]
    table = [
        [
            row.layer,
            row.type,
            row.activation,
            row.output_shape,
            f"{row.parameters:,}",
            f"{row.multiply_adds:,}",
            fields.get(row.layer, ""),
        ]
        for row in arch.itertuples()
    ]
    table.append(
        ["total", "", "", "", f"{int(arch['parameters'].sum()):,}", f"{int(arch['multiply_adds'].sum()):,}", ""]
    )
    per_class = [
        [c, f"{p:.3f}", f"{rc:.3f}", f"{f1:.3f}", str(int(n))]
        for c, p, rc, f1, n in r["per_class"][["class", "precision", "recall", "f1", "support"]].itertuples(
            index=False, name=None
        )
    ]
    return [
        ("h2", f"{r['title']} on {r['dataset']}"),
        ("h3", "Layers"),
        ("table", ["layer", "type", "activation", "output", "parameters", "multiply-adds", "receptive field"], table),
        ("h3", "Learning curves"),
        ("img", figures.learning_curves(name, r["history"]), f"{name} learning curves"),
        ("h3", "Confusion matrix"),
        ("img", figures.confusion(name, r["confusion"]), f"{name} confusion matrix"),
        ("h3", "Per class"),
        ("img", figures.per_class(name, r["per_class"]), f"{name} precision and recall"),
        ("table", ["class", "precision", "recall", "F1", "support"], per_class),
        ("h3", "Misclassified test images"),
        ("img", figures.misclassified(name, *misclassified_examples(r)), f"{name} misclassified images"),
        ("h3", "First-layer filters"),
        ("img", figures.first_layer_filters(name, r["details"]["first_kernel"]), f"{name} first-layer filters"),
    ]


def provenance_blocks(sections: list[dict]) -> list[tuple]:
    blocks: list[tuple] = [("h2", "Data provenance")]
    seen = set()
    for section in sections:
        prov = section["provenance"]
        if prov["dataset"] in seen:
            continue
        seen.add(prov["dataset"])
        kind = "checksums verified against the pinned ones" if prov["official"] else "identified by its sha256"
        blocks.append(("p", f"**{prov['title']}** ({kind}):"))
        blocks.append(("table", ["file", "sha256"], [[f, s] for f, s in prov["files"].items()]))
    return blocks


def build_blocks(notebook: dict[str, dict], sections: list[dict], diagnostics_dir: Path) -> list[tuple]:
    """The report: `sections` (classic_cnns/reporting/section.py's, one per model in params.yaml, in
    its order) and `notebook`, load_results of the notebook's two models (lenet5, alexnet) for its
    questions and AlexNet's comparison with the ImageNet original."""
    blocks: list[tuple] = [("h1", "LeNet-5 and AlexNet: results of this run")]
    non_official = sorted({s["dataset"] for s in sections if not s["provenance"]["official"]})
    if non_official:
        blocks.append(
            (
                "p",
                "**Note:** these results come from non-official data: "
                + "; ".join(non_official)
                + ". See *Data provenance* below; accuracies are close to, but not the same as, "
                "numbers on the official datasets.",
            )
        )
    rows = [[label] + [s["side_by_side"][label] for s in sections] for label, _ in SIDE_BY_SIDE]
    blocks += [
        ("h2", "Side by side"),
        ("table", ["", *[s["title"] for s in sections]], rows),
        (
            "p",
            "What the runs cost (wall times, speeds, memory, devices, and a GPU against the CPU): "
            "[costs.md](costs.md), kept apart because DVC hashes this report and timings differ on every run.",
        ),
    ]
    blocks += questions.question_blocks(notebook)
    blocks += [("md", s["markdown"]) for s in sections]
    alexnets = [r for r in notebook.values() if r["config"].architecture == "alexnet"]
    if alexnets:
        blocks += architectures.comparison_blocks(alexnets[0])
    blocks += questions.diagnostics_blocks(diagnostics_dir)
    blocks += [
        ("h2", "The notebook's claims"),
        (
            "p",
            "Whether ReLU trains faster than tanh, dropout prevents overfitting, max pooling beats "
            "average pooling, LeNet-5 lacks the capacity for CIFAR-10 and large first kernels help "
            "is measured by the claims grid, several seeds per variant: `dvc repro ablations/dvc.yaml` "
            "writes the claims table with a verdict per claim to [claims.md](claims.md) beside this "
            "report (a separate pipeline, so this report does not wait for it).",
        ),
    ]
    return blocks + provenance_blocks(sections)
