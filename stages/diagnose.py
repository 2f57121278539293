"""Stage `diagnose`: why did the reference notebook's AlexNet not learn?

    python -m stages.diagnose

Replays the first `diagnose.steps` training steps of `diagnose.model` twice, from the same
initial weights: once with its recipe from params.yaml, once with the notebook's settings
(`diagnose.notebook`; everything else as the notebook had it: constant rate, no augmentation).
Every `diagnose.every` steps it measures, on a fixed batch of validation images: the loss and
accuracy, the spread of the logits, the fraction of dead ReLU units per layer (units that output
0 for every probe image) and, on the TensorFlow backend, the gradient norm per layer.

Writes reports/diagnostics/steps.csv, layers.csv and summary.json.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pandas as pd

from stages.augment import epoch_data
from stages.params import Model, Params, load_or_exit
from stages.train import REPORTS_DIR, build_compiled, load_split, seed_everything

OUT_DIR = REPORTS_DIR / "diagnostics"


def notebook_config(params: Params, cfg: Model) -> Model:
    nb = params.diagnose.notebook
    return Model(architecture=cfg.architecture, dataset=cfg.dataset, optimizer=nb.optimizer,
                 learning_rate=nb.learning_rate, batch_size=nb.batch_size, input_scaling=nb.input_scaling)


def relu_layers(model) -> list:
    return [layer for layer in model.layers
            if getattr(getattr(layer, "activation", None), "__name__", "") == "relu"]


def gradient_norms(model, x, y) -> dict[str, float]:
    """L2 norm of the loss gradient for each layer's kernel (TensorFlow backend only)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return {}
    import tensorflow as tf

    kernels = {layer.name: layer.kernel for layer in model.layers if hasattr(layer, "kernel")}
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False))
    grads = tape.gradient(loss, [k.value for k in kernels.values()])
    return {name: float(tf.norm(tf.cast(g, tf.float32))) if g is not None else 0.0
            for name, g in zip(kernels, grads)}


def probe(model, probe_model, relus, x, y) -> tuple[dict, list[dict]]:
    outputs = probe_model.predict(x, verbose=0, batch_size=len(x))
    *activations, probs = outputs if isinstance(outputs, list) else [outputs]
    probs = np.asarray(probs, dtype=np.float64)
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    labels = y.argmax(axis=1)
    step = {
        "probe_loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "probe_accuracy": float((probs.argmax(axis=1) == labels).mean()),
        # log-probabilities differ from the logits by a constant per image, so their spread
        # across classes is the logits' spread: 0 means the network says the same for every class.
        "logit_std": float(log_probs.std(axis=1).mean()),
    }
    grads = gradient_norms(model, x, y)
    layers = []
    for layer, act in zip(relus, activations):
        act = np.asarray(act, dtype=np.float32)
        per_unit_max = act.reshape(-1, act.shape[-1]).max(axis=0)
        layers.append({"layer": layer.name, "dead_fraction": float((per_unit_max <= 0).mean()),
                       "grad_norm": grads.get(layer.name, float("nan"))})
    return step, layers


def replay(params: Params, label: str, cfg: Model, arrays: dict, meta: dict) -> tuple[list, list]:
    import keras

    seed_everything(params.seed)
    num_classes = len(meta["classes"])
    steps_per_epoch = math.ceil(len(arrays["x_train"]) / cfg.batch_size)
    model = build_compiled(dataclasses.replace(cfg, steps_per_execution=1), meta, steps_per_epoch)
    relus = relu_layers(model)
    probe_model = keras.Model(model.input, [layer.output for layer in relus] + [model.output])
    n = params.diagnose.probe_images
    x_probe = arrays["x_val"][:n].astype("float32")
    y_probe = keras.utils.to_categorical(arrays["y_val"][:n], num_classes)
    y_train = keras.utils.to_categorical(arrays["y_train"], num_classes)

    steps, layers = [], []
    epoch, x_epoch, y_epoch, offset = 0, None, None, len(y_train)
    for step in range(params.diagnose.steps + 1):
        if step % params.diagnose.every == 0 or step == params.diagnose.steps:
            row, per_layer = probe(model, probe_model, relus, x_probe, y_probe)
            steps.append({"recipe": label, "step": step, **row})
            layers += [{"recipe": label, "step": step, **r} for r in per_layer]
        if step == params.diagnose.steps:
            break
        if offset + cfg.batch_size > len(y_train):
            x_epoch, y_epoch = epoch_data(arrays["x_train"], y_train, cfg, params.seed, epoch)
            epoch, offset = epoch + 1, 0
        model.train_on_batch(x_epoch[offset:offset + cfg.batch_size], y_epoch[offset:offset + cfg.batch_size])
        offset += cfg.batch_size
    last = steps[-1]
    print(f"diagnose {label}: after {last['step']} steps probe loss {last['probe_loss']:.4f}, accuracy "
          f"{last['probe_accuracy']:.3f}, logit spread {last['logit_std']:.4f}")
    return steps, layers


def summarise(steps: pd.DataFrame, layers: pd.DataFrame, recipes: dict[str, Model]) -> dict:
    summary = {"ln_classes": math.log(10), "recipes": {}}
    for label, cfg in recipes.items():
        s = steps[steps.recipe == label].sort_values("step")
        last_step = int(s.step.max())
        final_layers = layers[(layers.recipe == label) & (layers.step == last_step)]
        summary["recipes"][label] = {
            "settings": {k: v for k, v in dataclasses.asdict(cfg).items()
                         if k in ("optimizer", "learning_rate", "batch_size", "input_scaling", "schedule",
                                  "warmup_epochs", "mixed_precision", "augment_crop_padding")},
            "steps": last_step,
            "final_probe_loss": float(s.probe_loss.iloc[-1]),
            "final_probe_accuracy": float(s.probe_accuracy.iloc[-1]),
            "final_logit_std": float(s.logit_std.iloc[-1]),
            "initial_logit_std": float(s.logit_std.iloc[0]),
            "dead_fraction": dict(zip(final_layers.layer, final_layers.dead_fraction.astype(float))),
            "grad_norm": dict(zip(final_layers.layer, final_layers.grad_norm.astype(float))),
        }
    return summary


def main(argv: list[str]) -> int:
    params = load_or_exit()
    name = params.diagnose.model
    if name not in params.models:
        print(f"error: params.yaml: 'diagnose.model' is '{name}', not one of models: {', '.join(params.models)}",
              file=sys.stderr)
        return 2
    cfg = params.model(name)
    arrays, meta = load_split(cfg.dataset)
    recipes = {"recipe": cfg, "notebook": notebook_config(params, cfg)}
    steps, layers = [], []
    for label, recipe in recipes.items():
        s, lay = replay(params, label, recipe, arrays, meta)
        steps += s
        layers += lay
    steps_df, layers_df = pd.DataFrame(steps), pd.DataFrame(layers)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    steps_df.to_csv(OUT_DIR / "steps.csv", index=False, float_format="%.6g")
    layers_df.to_csv(OUT_DIR / "layers.csv", index=False, float_format="%.6g")
    summary = {"model": name, "probe_images": params.diagnose.probe_images, **summarise(steps_df, layers_df, recipes)}
    (OUT_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
