"""Stage `evaluate`: score a trained model on its test set and add the results to its MLflow run.

    python -m stages.evaluate lenet5

With `evaluate.test_time_augmentation.<name>` the scores average the predictions over several views
of each image. Writes reports/<name>/metrics.json and the rest (classic_cnns/evaluation/results.py),
its costs to reports/costs/ and reports/costs.md;
adds them to the MLflow run that trained the model (found by the model file's sha256), registers
a version of the model (a full-quality run's becomes the `champion`) and ends the run FINISHED. A
stop before that (SIGTERM, Ctrl-C, a failure) ends the run KILLED or FAILED and registers nothing.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from classic_cnns import environment, outputs, paths
from classic_cnns.data.prepared import load_split
from classic_cnns.errors import check_interrupted, finishing, run_stage, signals_held
from classic_cnns.evaluation import results, scores
from classic_cnns.evaluation.tta import predict, tta_views
from classic_cnns.params import load_or_exit, stage_args
from classic_cnns.reporting import costs_page
from classic_cnns.tracking import record, registry, store


def evaluate(params, name: str) -> dict:
    cfg = params.model(name)
    store.use_store(params.mlflow.experiment)  # a tracking fault costs seconds, before any work
    arrays, meta = load_split(cfg.dataset)
    x_test, y_test = arrays["x_test"].astype("float32"), arrays["y_test"].astype(np.int64)
    model_file = paths.model_file(name)
    model = outputs.load_keras_model(model_file, f"train@{name}")
    with store.failures_named(store.tracking_uri(), "finding the model's run"):
        run_id = registry.run_of_model_file(params.mlflow.experiment, name, cfg, meta, model, model_file)
    with record.evaluation_run(run_id, name):  # ended KILLED or FAILED by a stop before the end
        metrics, details, cost, views = score(params, name, cfg, model, model_file, meta, x_test, y_test)
        check_interrupted()
        with store.failures_named(store.tracking_uri(), "logging the evaluation"):
            record.log_evaluation(name, metrics, details, cost)
            finishing()  # from here the stage completes: a signal now waits for its end (exit 0)
            record.register(name, cfg.dataset, run_id, metrics, registry.is_full_quality(meta))
    averaged = (
        f" ({len(views)} views averaged; single view {metrics['test_accuracy_single_view']:.4f})"
        if len(views) > 1
        else ""
    )
    print(
        f"{name}: test accuracy {metrics['test_accuracy']:.4f}{averaged}, loss {metrics['test_loss']:.4f} on "
        f"{len(y_test)} images; {cost['inference_images_per_second']:.0f} images/s"
    )
    return metrics


def score(params, name: str, cfg, model, model_file, meta: dict, x_test, y_test) -> tuple[dict, dict, dict, list]:
    """Score the model and write the stage's outputs: (metrics, details, cost, the test views)."""
    batch = params.evaluate.batch_size
    views = tta_views(cfg, params.evaluate.tta(name))
    with signals_held():  # TensorFlow's work: a signal stops it at the next batch's end
        single, images_per_second = scores.timed_predict(model, x_test, batch)
        probs = predict(model, x_test, views, batch, centre=single)
        latency = scores.latency_ms(model, x_test)
    metrics, *tables = scores.score(probs, y_test, meta["classes"])
    metrics["test_accuracy_single_view"] = scores.accuracy_and_loss(single, y_test)["accuracy"]
    details = {
        "test_images": int(len(y_test)),
        "test_views": len(views),
        "inference_batch_size": batch,
        "model_size_mb": round(model_file.stat().st_size / 1e6, 2),
    }
    cost = {
        "inference_images_per_second": round(images_per_second, 1),
        "latency_ms_per_image": round(latency, 3),
        "device": environment.device(),
        "keras_backend": keras.backend.backend(),
        **{f"inference_{k}": v for k, v in environment.peak_memory_mb().items()},
    }
    check_interrupted()
    results.write_outputs(name, metrics, details, cost, tables, y_test, probs, meta["classes"])
    costs_page.write()
    return metrics, details, cost, views


def main(argv: list[str]) -> int:
    params = load_or_exit()
    evaluate(params, stage_args("evaluate", argv, model=params.models).model)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
