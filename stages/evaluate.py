"""Stage `evaluate`: score a trained model on its test set and add the results to its MLflow run.

    python -m stages.evaluate lenet5

Writes reports/<name>/metrics.json (DVC metrics: test accuracy as a fraction in [0, 1], loss,
macro F1, inference speed; with `test_time_augmentation` the scores average the predictions over
several views of each image and the single-view accuracy is kept beside them), reports/<name>/per_class.csv (precision, recall, F1 per class),
reports/<name>/confusion.csv (the matrix) and reports/<name>/predictions.csv (actual/predicted per
test image, for DVC's confusion-matrix plot).
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd

from stages import environment, tracking
from stages.tta import predict, tta_views
from stages.params import Params, load_or_exit
from stages.train import MODELS_DIR, REPORTS_DIR, load_split


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
    return pd.DataFrame({"class": class_names, "precision": precision, "recall": recall, "f1": f1,
                         "support": actual})


def register(model_name: str, run_id: str, test_accuracy: float) -> None:
    """A new version of the registered model per trained model, its test accuracy on the version."""
    import mlflow

    version = mlflow.register_model(f"runs:/{run_id}/model", model_name)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(model_name, version.version, "test_accuracy", f"{test_accuracy:.4f}")
    client.update_model_version(model_name, version.version,
                                description=f"test accuracy {test_accuracy:.4f} (run {run_id})")
    print(f"registered {model_name} version {version.version}")


def evaluate(params: Params, name: str) -> dict:
    import keras
    import mlflow

    cfg = params.model(name)
    arrays, meta = load_split(cfg.dataset)
    x_test, y_test = arrays["x_test"].astype("float32"), arrays["y_test"].astype(np.int64)
    model = keras.models.load_model(MODELS_DIR / name / "model.keras")
    batch = params.evaluate.batch_size

    model.predict(x_test[:batch], batch_size=batch, verbose=0)  # warm-up: build and compile
    started = time.perf_counter()
    single = model.predict(x_test, batch_size=batch, verbose=0)
    seconds = time.perf_counter() - started
    views = tta_views(cfg)
    probs = predict(model, x_test, cfg, batch, centre=single)

    latencies = []
    for i in range(min(len(x_test), 50) + 5):  # one image at a time, as a service would; 5 warm-up calls
        started = time.perf_counter()
        model(x_test[i % len(x_test)][None], training=False)
        latencies.append(time.perf_counter() - started)

    predicted = probs.argmax(axis=1)
    picked = np.clip(probs[np.arange(len(y_test)), y_test], 1e-12, 1.0)
    classes = meta["classes"]
    matrix = confusion_matrix(y_test, predicted, len(classes))
    scores = per_class_scores(matrix, classes)
    metrics = {
        "test_accuracy": float((predicted == y_test).mean()),
        "test_loss": float(-np.log(picked).mean()),
        "test_macro_f1": float(scores["f1"].mean()),
        "test_images": int(len(y_test)),
        "test_views": len(views),
        "test_accuracy_single_view": float((single.argmax(axis=1) == y_test).mean()),
        "inference_images_per_second": round(len(y_test) / seconds, 1),
        "inference_batch_size": batch,
        "latency_ms_per_image": round(1000 * float(np.median(latencies[5:])), 3),
        "model_size_mb": round((MODELS_DIR / name / "model.keras").stat().st_size / 1e6, 2),
        **{f"inference_{k}": v for k, v in environment.peak_memory_mb().items()},
    }

    out = REPORTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    scores.to_csv(out / "per_class.csv", index=False, float_format="%.4f")
    pd.DataFrame(matrix, index=pd.Index(classes, name="actual"), columns=classes).to_csv(out / "confusion.csv")
    pd.DataFrame({"actual": np.array(classes)[y_test], "predicted": np.array(classes)[predicted]}).to_csv(
        out / "predictions.csv", index=False)

    run = json.loads((MODELS_DIR / name / "run.json").read_text())
    tracking.use_store(params.mlflow.experiment)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({k: v for k, v in metrics.items() if k != "inference_batch_size"})
        for f in ("metrics.json", "per_class.csv", "confusion.csv"):
            mlflow.log_artifact(str(out / f), artifact_path="evaluation")
    register(f"{name}-{cfg.dataset}", run["run_id"], metrics["test_accuracy"])
    averaged = (f" ({len(views)} views averaged; single view {metrics['test_accuracy_single_view']:.4f})"
                if len(views) > 1 else "")
    print(f"{name}: test accuracy {metrics['test_accuracy']:.4f}{averaged}, loss {metrics['test_loss']:.4f} on "
          f"{len(y_test)} images; {metrics['inference_images_per_second']:.0f} images/s")
    return metrics


def main(argv: list[str]) -> int:
    tracking.end_runs_on_sigterm()
    params = load_or_exit()
    if len(argv) != 1 or argv[0] not in params.models:
        print(f"usage: python -m stages.evaluate {{{','.join(params.models)}}}", file=sys.stderr)
        return 2
    evaluate(params, argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
