"""Stage `train`: fit one model from params.yaml `models.<name>` and log it to MLflow.

    python -m stages.train lenet5

Reads data/prepared/<dataset>.npz; writes models/<name>/model.keras and models/<name>/run.json
(the MLflow run id, which `evaluate` adds to), reports/<name>/history.csv (per-epoch loss and
accuracy, a DVC plot), reports/<name>/architecture.csv (the layer table) and
reports/<name>/training.json (time, throughput, device; DVC metrics).

Every epoch is checkpointed to checkpoints/<name>/, so a killed run rerun with `dvc repro`
continues from its last finished epoch and ends with the same weights as an uninterrupted run.
Every epoch is also checked for health: a non-finite loss, or a loss stuck at ln(classes) with
chance accuracy, stops the stage with a message, marks the MLflow run FAILED and writes no outputs.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from stages import environment, tracking
from stages.augment import epoch_data
from stages.checkpoint import Checkpoint, fingerprint, get_values, set_values
from stages.params import Params, load_or_exit
from stages.prepare import PREPARED_DIR

MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
CHECKPOINTS_DIR = Path("checkpoints")
KILL_AFTER_EPOCH_ENV = "CLASSIC_CNN_KILL_AFTER_EPOCH"  # for tests: kill itself after that epoch ...
KILL_SIGNAL_ENV = "CLASSIC_CNN_KILL_SIGNAL"  # ... with this signal (default SIGKILL)


class TrainingFailed(RuntimeError):
    def __init__(self, reason: str, epoch: int, message: str):
        super().__init__(message)
        self.reason, self.epoch = reason, epoch


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


def learning_rate(cfg, steps_per_epoch: int):
    """A float, or a schedule of the optimizer's step: linear warm-up, then constant or cosine."""
    import keras

    if cfg.schedule == "constant" and cfg.warmup_epochs == 0:
        return cfg.learning_rate
    warmup = cfg.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.learning_rate,
        warmup_target=cfg.learning_rate if warmup else None, warmup_steps=warmup,
        decay_steps=max(1, cfg.epochs * steps_per_epoch - warmup),
        alpha=1.0 if cfg.schedule == "constant" else 0.0)


def make_optimizer(cfg, steps_per_epoch: int):
    import keras

    lr = learning_rate(cfg, steps_per_epoch)
    decay = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=decay)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(lr, weight_decay=decay)


def input_stats(cfg, meta: dict) -> tuple[list[float], list[float]]:
    """(mean, std) the model's first layer normalises pixels with."""
    channels = len(meta["mean"])
    if cfg.input_scaling == "standardize":
        return meta["mean"], meta["std"]
    return [0.0] * channels, [255.0 if cfg.input_scaling == "unit" else 1.0] * channels


def build_compiled(cfg, meta: dict, steps_per_epoch: int):
    """The model of `cfg`, compiled with its optimizer, schedule and loss."""
    import keras

    from stages.models import build

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg.mixed_precision else "float32")
    mean, std = input_stats(cfg, meta)
    model = build(cfg.architecture, tuple(meta["shape"]), mean, std, len(meta["classes"]),
                  batch_norm=cfg.batch_norm, kernel_initializer=cfg.kernel_initializer,
                  activation=cfg.activation, pooling=cfg.pooling, dropout=cfg.dropout, first_kernel=cfg.first_kernel)
    model.compile(optimizer=make_optimizer(cfg, steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=["accuracy"], steps_per_execution=cfg.steps_per_execution)
    return model


def stop_on_non_finite_loss(name: str):
    import keras

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise TrainingFailed("non-finite loss", self.epoch, (
                    f"{name}: training loss became {float(loss)} at epoch {self.epoch}, step {batch + 1}. "
                    f"Likely fixes: lower models.{name}.learning_rate (e.g. 10x), add warm-up "
                    f"(models.{name}.warmup_epochs), enable models.{name}.batch_norm, or check the inputs."))

    return StopOnNonFiniteLoss()


def check_learning(name: str, epoch: int, logs: dict, params: Params, num_classes: int) -> None:
    """After health.check_after_epochs epochs, a loss at ln(classes) with chance accuracy is a
    network that has not learned anything: stop rather than report it as a result."""
    health = params.health
    chance_loss, chance_acc = math.log(num_classes), 1.0 / num_classes
    if epoch < health.check_after_epochs:
        return
    if abs(logs["loss"] - chance_loss) <= health.loss_margin and logs["accuracy"] <= chance_acc + health.accuracy_margin:
        raise TrainingFailed("did not learn", epoch, (
            f"{name}: did not learn: after epoch {epoch} the training loss is {logs['loss']:.4f}, "
            f"ln({num_classes}) = {chance_loss:.4f}, what a uniform guess scores, and accuracy "
            f"{logs['accuracy']:.3f} is at chance ({chance_acc:.2f}): most ReLUs have likely died "
            f"(`dvc repro diagnose` measures it). Likely fixes: standardise the inputs "
            f"(models.{name}.input_scaling: standardize), lower models.{name}.learning_rate (e.g. 10x), add "
            f"warm-up (models.{name}.warmup_epochs), enable models.{name}.batch_norm, or use "
            f"models.{name}.kernel_initializer: he_normal."))


def run_params(params: Params, name: str) -> dict[str, object]:
    """Flattened params for MLflow: shared knobs as they are, this model's under 'model.' so both
    runs compare column by column in the MLflow UI."""
    flat = params.as_flat_dict()
    out = {k: v for k, v in flat.items() if not k.startswith(("models.", "ablations."))}
    out.update({k.replace(f"models.{name}.", "model.", 1): v for k, v in flat.items()
                if k.startswith(f"models.{name}.")})
    out["model.name"] = name
    return out


def pip_requirements() -> list[str]:
    return [f"{pkg}=={ver}" for pkg, ver in environment.package_versions().items()
            if pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "numpy")]


def start_run(params: Params, name: str, meta: dict, resume_id: str | None):
    """Continue the MLflow run of a resumed checkpoint, or start a new, fully tagged one."""
    import mlflow

    tracking.use_store(params.mlflow.experiment)
    if resume_id and mlflow.get_run(resume_id) is not None:
        return mlflow.start_run(run_id=resume_id)
    cfg = params.model(name)
    prov = meta["provenance"]
    run = mlflow.start_run(run_name=f"{name}-{cfg.dataset}")
    mlflow.log_params(run_params(params, name))
    mlflow.set_tags({**tracking.run_tags(), **environment.describe(), "model": name,
                     "architecture": cfg.architecture, "dataset": cfg.dataset, "dataset_title": prov["title"],
                     "dataset_official": str(prov["official"]).lower(),
                     **{f"dataset_sha256.{f}": s for f, s in prov["files"].items()}})
    return run


def train(params: Params, name: str) -> dict:
    import keras
    import mlflow

    cfg = params.model(name)
    seed_everything(params.seed)
    arrays, meta = load_split(cfg.dataset)
    num_classes = len(meta["classes"])
    x_train, y_train = arrays["x_train"], keras.utils.to_categorical(arrays["y_train"], num_classes)
    x_val, y_val = arrays["x_val"].astype("float32"), keras.utils.to_categorical(arrays["y_val"], num_classes)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)

    model = build_compiled(cfg, meta, steps_per_epoch)
    device = environment.device()
    ckpt = Checkpoint(CHECKPOINTS_DIR / name, fingerprint(dataclasses.asdict(cfg), params.seed,
                                                         dataclasses.asdict(params.prepare), meta))
    state = ckpt.load(model) or {"epoch": 0, "history": {}, "train_seconds": 0.0, "run_id": None,
                                 "best_val_accuracy": None, "best_epoch": 0}
    best = ckpt.best_weights(state) if state["epoch"] else None
    print(f"{name}: {cfg.architecture} on {meta['provenance']['title']}, {len(x_train)} training images, "
          f"{model.count_params():,} parameters; training on {device} ({keras.backend.backend()} backend)"
          + (f"; resuming after epoch {state['epoch']}" if state["epoch"] else ""))

    run = start_run(params, name, meta, state["run_id"])
    state["run_id"] = run.info.run_id
    try:
        stopped_early = False
        for epoch in range(state["epoch"], cfg.epochs):
            x_epoch, y_epoch = epoch_data(x_train, y_train, cfg, params.seed, epoch)
            started = time.perf_counter()
            fit = model.fit(x_epoch, y_epoch, batch_size=cfg.batch_size, epochs=epoch + 1, initial_epoch=epoch,
                            validation_data=(x_val, y_val), shuffle=False,
                            verbose=1 if sys.stdout.isatty() else 0, callbacks=[stop_on_non_finite_loss(name)])
            seconds = time.perf_counter() - started
            logs = {k: float(v[-1]) for k, v in fit.history.items()}
            for k, v in {**logs, "epoch_seconds": seconds}.items():
                state["history"].setdefault(k, []).append(v)
            state["train_seconds"] += seconds
            state["epoch"] = epoch + 1
            mlflow.log_metrics({**logs, "epoch_seconds": seconds}, step=epoch + 1)
            print(f"{name} epoch {epoch + 1}/{cfg.epochs}: loss {logs['loss']:.4f} accuracy {logs['accuracy']:.4f} "
                  f"val_loss {logs['val_loss']:.4f} val_accuracy {logs['val_accuracy']:.4f} ({seconds:.1f} s)",
                  flush=True)
            check_learning(name, epoch + 1, logs, params, num_classes)

            improved = state["best_val_accuracy"] is None or logs["val_accuracy"] > state["best_val_accuracy"]
            if cfg.early_stopping_patience and improved:
                state["best_val_accuracy"], state["best_epoch"] = logs["val_accuracy"], epoch + 1
                best = get_values(model.variables)
            ckpt.save(model, state, best if (cfg.early_stopping_patience and improved) else None)
            if os.environ.get(KILL_AFTER_EPOCH_ENV) == str(epoch + 1):
                os.kill(os.getpid(), signal.Signals[os.environ.get(KILL_SIGNAL_ENV, "SIGKILL")])
            if cfg.early_stopping_patience and epoch + 1 - state["best_epoch"] >= cfg.early_stopping_patience:
                print(f"{name}: validation accuracy has not improved for {cfg.early_stopping_patience} epochs; "
                      f"stopping and keeping epoch {state['best_epoch']}'s weights")
                stopped_early = True
                break
        if cfg.early_stopping_patience and best is not None:
            set_values(model.variables, best)
        summary = write_outputs(params, name, model, state, device, len(x_train), stopped_early)
    except TrainingFailed as failure:
        mlflow.set_tags({"failure_reason": failure.reason, "failure_epoch": str(failure.epoch),
                         "failure_message": str(failure)[:5000]})
        mlflow.end_run(status="FAILED")
        ckpt.clear()
        raise
    except BaseException as exc:  # the checkpoint stays: a rerun resumes this run
        mlflow.end_run(status=tracking.interrupted_status(exc))
        raise
    mlflow.end_run()
    ckpt.clear()
    print(f"{name}: trained {summary['epochs']} epochs in {summary['train_seconds']:.1f} s; val accuracy "
          f"{summary['final_val_accuracy']:.4f}; MLflow run {state['run_id']}")
    return summary


def write_outputs(params: Params, name: str, model, state: dict, device: str, n_train: int,
                  stopped_early: bool) -> dict:
    """The stage's outputs, each written to a temporary name first; logged to the active run."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from stages.models import layer_table

    out_dir, report_dir = MODELS_DIR / name, REPORTS_DIR / name
    out_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.tmp.keras"
    model.save(tmp)
    os.replace(tmp, out_dir / "model.keras")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, *model.input_shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, model.output_shape[-1]))]))
    mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=pip_requirements())

    history = state["history"]
    epochs = state["epoch"]
    pd.DataFrame({"epoch": range(1, epochs + 1), **history}).to_csv(report_dir / "history.csv", index=False)
    layer_table(model).to_csv(report_dir / "architecture.csv", index=False)
    mlflow.log_artifact(str(report_dir / "history.csv"))
    summary = {
        "train_seconds": round(state["train_seconds"], 2),
        "epochs": epochs,
        "train_images_per_second": round(n_train * epochs / state["train_seconds"], 1),
        "final_train_accuracy": history["accuracy"][-1],
        "final_val_accuracy": history["val_accuracy"][-1],
        "parameters": int(model.count_params()),
        "device": device,
        **environment.peak_memory_mb(),
    }
    if params.model(name).early_stopping_patience:
        summary.update(best_epoch=state["best_epoch"], stopped_early=stopped_early)
    mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    (report_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "run.json").write_text(json.dumps({"run_id": state["run_id"],
                                                  "tracking_uri": tracking.tracking_uri()}, indent=2) + "\n")
    return summary


def main(argv: list[str]) -> int:
    tracking.end_runs_on_sigterm()
    params = load_or_exit()
    if len(argv) != 1 or argv[0] not in params.models:
        print(f"usage: python -m stages.train {{{','.join(params.models)}}}", file=sys.stderr)
        return 2
    try:
        train(params, argv[0])
    except TrainingFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
