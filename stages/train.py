"""Stage `train`: fit one model from params.yaml `models.<name>` and log it to MLflow.

    python -m stages.train lenet5

Reads data/prepared/<dataset>.npz; writes models/<name>/model.keras and models/<name>/run.json
(the MLflow run id, which `evaluate` adds to), reports/<name>/history.csv (per-epoch loss and
accuracy, a DVC plot), reports/<name>/architecture.csv (the layer table) and reports/<name>/training.json (time, throughput, device; DVC metrics).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from stages import environment, tracking
from stages.params import Params, load_or_exit
from stages.prepare import PREPARED_DIR

MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")


def load_split(dataset: str) -> tuple[dict[str, np.ndarray], dict]:
    meta = json.loads((PREPARED_DIR / f"{dataset}.json").read_text())
    with np.load(PREPARED_DIR / f"{dataset}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, meta


def seed_everything(seed: int) -> None:
    """Same seed, same machine -> same weights: seeded RNGs and deterministic kernels."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def make_optimizer(cfg):
    import keras

    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=cfg.learning_rate, momentum=cfg.momentum)
    return keras.optimizers.Adam(learning_rate=cfg.learning_rate)


def run_params(params: Params, name: str) -> dict[str, object]:
    """Flattened params for MLflow: shared knobs as they are, this model's under 'model.' so both
    runs compare column by column in the MLflow UI."""
    flat = params.as_flat_dict()
    out = {k: v for k, v in flat.items() if not k.startswith("models.")}
    out.update({k.replace(f"models.{name}.", "model.", 1): v for k, v in flat.items()
                if k.startswith(f"models.{name}.")})
    out["model.name"] = name
    return out


def pip_requirements() -> list[str]:
    from stages.environment import package_versions

    return [f"{pkg}=={ver}" for pkg, ver in package_versions().items()
            if pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "numpy")]


def layer_table(model) -> "pd.DataFrame":
    """One row per layer of the built model: name, type, activation, output shape, parameters."""
    import pandas as pd

    rows = []
    for layer in model.layers[1:]:  # skip the Input
        activation = getattr(layer, "activation", None)
        rows.append({
            "layer": layer.name,
            "type": type(layer).__name__,
            "activation": getattr(activation, "__name__", "") if activation else "",
            "output_shape": "x".join(str(d) for d in layer.output.shape[1:]),
            "parameters": layer.count_params(),
        })
    return pd.DataFrame(rows)


def train(params: Params, name: str) -> dict:
    import keras
    import mlflow
    from mlflow.models import infer_signature

    cfg = params.model(name)
    seed_everything(params.seed)
    arrays, meta = load_split(cfg.dataset)
    x_train, y_train = arrays["x_train"].astype("float32"), arrays["y_train"]
    x_val, y_val = arrays["x_val"].astype("float32"), arrays["y_val"]

    from stages.models import build

    model = build(cfg.architecture, tuple(meta["shape"]), meta["mean"], meta["std"], len(meta["classes"]))
    model.compile(optimizer=make_optimizer(cfg), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    device = environment.device()
    print(f"{name}: {cfg.architecture} on {meta['provenance']['title']}, {len(x_train)} training images, "
          f"{model.count_params():,} parameters; training on {device} ({keras.backend.backend()} backend)")

    tracking.use_store(params.mlflow.experiment)
    with mlflow.start_run(run_name=f"{name}-{cfg.dataset}") as run:
        mlflow.log_params(run_params(params, name))
        mlflow.set_tags({**tracking.run_tags(), **environment.describe(), "model": name,
                         "architecture": cfg.architecture, "dataset": cfg.dataset,
                         "dataset_title": meta["provenance"]["title"],
                         "dataset_official": str(meta["provenance"]["official"]).lower(),
                         **{f"dataset_sha256.{f}": s for f, s in meta["provenance"]["files"].items()}})
        started = time.perf_counter()
        history = model.fit(
            x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
            validation_data=(x_val, y_val), shuffle=True,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[mlflow.keras.MlflowCallback()],
        )
        train_seconds = time.perf_counter() - started

        out_dir = MODELS_DIR / name
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "model.tmp.keras"
        model.save(tmp)
        tmp.replace(out_dir / "model.keras")

        signature = infer_signature(x_val[:2], model.predict(x_val[:2], verbose=0))
        mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=pip_requirements())

        rows = history.history
        epochs = len(rows["loss"])
        report_dir = REPORTS_DIR / name
        report_dir.mkdir(parents=True, exist_ok=True)
        import pandas as pd

        frame = pd.DataFrame({"epoch": range(1, epochs + 1), **rows})
        frame.to_csv(report_dir / "history.csv", index=False)
        layer_table(model).to_csv(report_dir / "architecture.csv", index=False)
        mlflow.log_artifact(str(report_dir / "history.csv"))
        summary = {
            "train_seconds": round(train_seconds, 2),
            "epochs": epochs,
            "train_images_per_second": round(len(x_train) * epochs / train_seconds, 1),
            "final_train_accuracy": float(rows["accuracy"][-1]),
            "final_val_accuracy": float(rows["val_accuracy"][-1]),
            "parameters": int(model.count_params()),
            "device": device,
        }
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        (report_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "run.json").write_text(json.dumps({"run_id": run.info.run_id,
                                                      "tracking_uri": tracking.tracking_uri()}, indent=2) + "\n")
    print(f"{name}: trained {epochs} epochs in {train_seconds:.1f} s; val accuracy "
          f"{summary['final_val_accuracy']:.4f}; MLflow run {run.info.run_id}")
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m stages.train <model name from params.yaml models>", file=sys.stderr)
        return 2
    params = load_or_exit()
    if argv[0] not in params.models:
        print(f"error: no model '{argv[0]}' under 'models' in params.yaml (have: {', '.join(params.models)})",
              file=sys.stderr)
        return 2
    train(params, argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
