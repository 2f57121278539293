"""Stage `evaluate`: score a trained model on its test set and add the results to its MLflow run.

    python -m stages.evaluate lenet5

Writes reports/<name>/metrics.json (DVC metrics: test accuracy as a fraction in [0, 1], plain
cross-entropy loss, macro F1; with `evaluate.test_time_augmentation.<name>` the scores average
the predictions over several views of each image, and the single-view accuracy is kept beside
them), evaluation.json (test images and views, batch, model size),
per_class.csv, confusion.csv and predictions.csv (actual/predicted per test image, for DVC's
confusion-matrix plot); the inference speed, latency, memory and device go to
reports/costs/evaluate-<name>.json, which DVC does not hash. Adds the results to the MLflow run that
trained the model (found by the model file's sha256) and registers a new version of the model; a
full-quality run's version becomes the `champion`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd

from classic_cnns import costs, environment, outputs, paths
from classic_cnns.evaluation import scores as evaluation
from classic_cnns.tracking import store as tracking
from classic_cnns.data.prepared import load_split
from classic_cnns.errors import UserError, run_stage
from classic_cnns.params import load_or_exit
from classic_cnns.evaluation.tta import predict, tta_views


def evaluate(params, name: str) -> dict:
    cfg = params.model(name)
    tracking.use_store(params.mlflow.experiment)  # a tracking fault costs seconds, before any work
    arrays, meta = load_split(cfg.dataset)
    x_test, y_test = arrays["x_test"].astype("float32"), arrays["y_test"].astype(np.int64)
    model_file = paths.model_file(name)
    if not model_file.exists():
        raise UserError(f"{model_file} is missing: run `dvc repro train@{name}` first")
    model = keras.models.load_model(model_file)
    batch = params.evaluate.batch_size
    views = tta_views(cfg, params.evaluate.tta(name))

    single, images_per_second = evaluation.timed_predict(model, x_test, batch)
    probs = predict(model, x_test, views, batch, centre=single)
    classes = meta["classes"]
    metrics, matrix, per_class = evaluation.score(probs, y_test, classes)
    metrics["test_accuracy_single_view"] = evaluation.accuracy_and_loss(single, y_test)["accuracy"]
    details = {"test_images": int(len(y_test)), "test_views": len(views), "inference_batch_size": batch,
               "model_size_mb": round(model_file.stat().st_size / 1e6, 2)}
    cost = {"inference_images_per_second": round(images_per_second, 1),
            "latency_ms_per_image": round(evaluation.latency_ms(model, x_test), 3), "device": environment.device(),
            "keras_backend": keras.backend.backend(),
            **{f"inference_{k}": v for k, v in environment.peak_memory_mb().items()}}

    out = paths.model_reports(name)
    outputs.write_json(out / "metrics.json", metrics)
    outputs.write_json(out / "evaluation.json", details)
    outputs.write_csv(per_class, out / "per_class.csv", index=False, float_format="%.4f")
    outputs.write_csv(pd.DataFrame(matrix, index=pd.Index(classes, name="actual"), columns=classes), out / "confusion.csv")
    outputs.write_csv(pd.DataFrame({"actual": np.array(classes)[y_test],
                                    "predicted": np.array(classes)[probs.argmax(axis=1)]}), out / "predictions.csv",
                      index=False)

    costs.write("evaluate", name, cost)

    with tracking.failures_named(tracking.tracking_uri(), "logging the evaluation"):
        run_id = training_run(params, name, cfg, meta, model, model_file)
        with mlflow.start_run(run_id=run_id):
            # tags, not params: a rerun with other evaluation knobs re-scores the same training run
            mlflow.set_tags({"evaluate.batch_size": str(batch), "evaluate.test_views": str(len(views))})
            mlflow.log_metrics({**metrics, **{k: v for k, v in {**details, **cost}.items()
                                              if isinstance(v, (int, float)) and k != "inference_batch_size"}})
            for f in ("metrics.json", "evaluation.json", "per_class.csv", "confusion.csv"):
                mlflow.log_artifact(str(out / f), artifact_path="evaluation")
        tracking.register(f"{name}-{cfg.dataset}", run_id, metrics["test_accuracy"], tracking.is_full_quality(meta))
    averaged = (f" ({len(views)} views averaged; single view {metrics['test_accuracy_single_view']:.4f})"
                if len(views) > 1 else "")
    print(f"{name}: test accuracy {metrics['test_accuracy']:.4f}{averaged}, loss {metrics['test_loss']:.4f} on "
          f"{len(y_test)} images; {images_per_second:.0f} images/s")
    return metrics


def training_run(params, name: str, cfg, meta: dict, model, model_file: Path) -> str:
    """The MLflow run that trained this model file (found by its sha256); for a model trained
    against another store (e.g. fetched with `dvc pull`), a new run of this store that holds it."""
    sha = outputs.sha256(model_file)
    found = tracking.training_run_of(params.mlflow.experiment, sha)
    if found:
        return found.info.run_id
    print(f"{name}: no run in this MLflow store trained {model_file} (sha256 {sha[:12]}...); logging it in a new run")
    with tracking.start_training_run(name, cfg, meta, {"model.name": name}, None) as run:
        mlflow.set_tags({tracking.MODEL_SHA_TAG: sha, "trained_elsewhere": "true"})
        tracking.log_keras_model(model)
        return run.info.run_id


def main(argv: list[str]) -> int:
    tracking.end_runs_on_sigterm()
    params = load_or_exit()
    if len(argv) != 1 or argv[0] not in params.models:
        print(f"usage: python -m stages.evaluate {{{','.join(params.models)}}}", file=sys.stderr)
        return 2
    evaluate(params, argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
