"""What an evaluation leaves: reports/<name>/metrics.json (DVC metrics: test accuracy as a fraction
in [0, 1], plain cross-entropy loss, macro F1, and the single-view accuracy where several test views
are averaged), evaluation.json (test images and views, batch, model size), per_class.csv,
confusion.csv and predictions.csv (actual/predicted per test image, for DVC's confusion-matrix plot);
all of it added to the MLflow run that trained the model (classic_cnns/tracking/record.py). The
inference speed, latency, memory and device go to reports/costs/evaluate-<name>.json, which DVC does not hash.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from classic_cnns import costs, outputs, paths


def write_outputs(
    name: str,
    metrics: dict,
    details: dict,
    cost: dict,
    scores: tuple,
    y_test: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
) -> None:
    """The stage's files (each written whole or not at all); `scores`: (confusion matrix, per-class scores)."""
    matrix, per_class = scores
    out = paths.model_reports(name)
    outputs.write_json(out / "metrics.json", metrics)
    outputs.write_json(out / "evaluation.json", details)
    outputs.write_csv(per_class, out / "per_class.csv", index=False, float_format="%.4f")
    outputs.write_csv(
        pd.DataFrame(matrix, index=pd.Index(classes, name="actual"), columns=classes), out / "confusion.csv"
    )
    outputs.write_csv(
        pd.DataFrame({"actual": np.array(classes)[y_test], "predicted": np.array(classes)[probs.argmax(axis=1)]}),
        out / "predictions.csv",
        index=False,
    )
    costs.write("evaluate", name, cost)
