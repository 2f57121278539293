"""What an evaluation leaves: reports/<name>/metrics.json (DVC metrics: test accuracy as a fraction
in [0, 1], plain cross-entropy loss, macro F1, and the single-view accuracy where several test views
are averaged), evaluation.json (test images and views, batch, model size), per_class.csv,
confusion.csv and predictions.csv (actual/predicted per test image, for DVC's confusion-matrix plot);
all of it added to the MLflow run that trained the model. The inference speed, latency, memory and
device go to reports/costs/evaluate-<name>.json, which DVC does not hash.
"""

from __future__ import annotations

import contextlib

import mlflow
import numpy as np
import pandas as pd

from classic_cnns import costs, outputs, paths
from classic_cnns.tracking.runs import end_run

LOGGED = ("metrics.json", "evaluation.json", "per_class.csv", "confusion.csv")


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


def log_to_run(run_id: str, name: str, metrics: dict, details: dict, cost: dict) -> None:
    """The evaluation's numbers and files, added to the run that trained the model. Interrupted
    (Ctrl-C, SIGTERM) or failed, the run is ended as it was (FINISHED: its training did finish),
    tagged `evaluation: interrupted`, and the interruption goes on."""
    mlflow.start_run(run_id=run_id)
    try:
        # tags, not params: a rerun with other evaluation knobs re-scores the same training run
        mlflow.set_tags(
            {
                "evaluate.batch_size": str(details["inference_batch_size"]),
                "evaluate.test_views": str(details["test_views"]),
                "evaluate.test_images": str(details["test_images"]),
            }
        )
        measured = {k: v for k, v in {**details, **cost}.items() if isinstance(v, float)}  # speed, size, memory
        mlflow.log_metrics({**metrics, **measured})
        for f in LOGGED:
            mlflow.log_artifact(str(paths.model_reports(name) / f), artifact_path="evaluation")
    except BaseException as exc:
        with contextlib.suppress(Exception):
            mlflow.set_tag("evaluation", f"interrupted ({type(exc).__name__}): rerun `dvc repro evaluate@{name}`")
        end_run("FINISHED")
        raise
    mlflow.end_run()
