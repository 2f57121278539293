"""Scoring a model on labelled images: the metrics every evaluation reports (the evaluate stage,
the claims grid), per-class scores, the confusion matrix and inference speed.

`test_loss` is always the plain cross-entropy of the predicted probabilities (no label smoothing,
whatever the training used), so losses compare across recipes.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from classic_cnns.errors import check_interrupted_while_held
from classic_cnns.training.loop import Interruptible


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return pd.DataFrame({"class": class_names, "precision": precision, "recall": recall, "f1": f1, "support": actual})


def accuracy_and_loss(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy of the most probable class, and the mean cross-entropy of the true class."""
    y = y.astype(np.int64)
    picked = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return {"accuracy": float((probs.argmax(axis=1) == y).mean()), "loss": float(-np.log(picked).mean())}


def score(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> tuple[dict, np.ndarray, pd.DataFrame]:
    """(metrics, confusion matrix, per-class scores) of predicted probabilities against labels."""
    matrix = confusion_matrix(y, probs.argmax(axis=1), len(classes))
    per_class = per_class_scores(matrix, classes)
    metrics = accuracy_and_loss(probs, y)
    return (
        {
            "test_accuracy": metrics["accuracy"],
            "test_loss": metrics["loss"],
            "test_macro_f1": float(per_class["f1"].mean()),
        },
        matrix,
        per_class,
    )


def timed_predict(model, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Probabilities for x and the images/s it took (after one warm-up batch that builds the model)."""
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0, callbacks=[Interruptible()])
    started = time.perf_counter()
    probs = model.predict(x, batch_size=batch_size, verbose=0, callbacks=[Interruptible()])
    return probs, len(x) / (time.perf_counter() - started)


def latency_ms(model, x: np.ndarray, calls: int = 50, warmup: int = 5) -> float:
    """Median time to answer one image, as a service would (after `warmup` calls)."""
    times = []
    for i in range(min(len(x), calls) + warmup):
        started = time.perf_counter()
        model(x[i % len(x)][None], training=False)
        times.append(time.perf_counter() - started)
        check_interrupted_while_held()
    return 1000 * float(np.median(times[warmup:]))
