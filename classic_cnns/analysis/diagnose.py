"""Why did the reference notebook's AlexNet not learn? Replays the first training steps of a
model twice, from the same initial weights: once with its recipe, once with the notebook's settings.
Every few steps it measures, on a fixed batch of validation images: the loss and accuracy, the
spread of the logits, the fraction of dead ReLU units per layer (units that output 0 for every
probe image) and the gradient norm per layer.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd

from classic_cnns.backend import kernel_gradient_norms
from classic_cnns.params import Model
from classic_cnns.training.session import Training, one_hot


def notebook_config(nb, cfg: Model) -> Model:
    """`cfg`'s architecture and data with the notebook's settings (`diagnose.notebook`), the rest as
    the notebook had it: constant rate, no augmentation, float32."""
    return Model(
        architecture=cfg.architecture,
        dataset=cfg.dataset,
        optimizer=nb.optimizer,
        learning_rate=nb.learning_rate,
        batch_size=nb.batch_size,
        input_scaling=nb.input_scaling,
    )


def relu_layers(model) -> list:
    return [layer for layer in model.layers if getattr(getattr(layer, "activation", None), "__name__", "") == "relu"]


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
    grads = kernel_gradient_norms(model, x, y)
    layers = []
    for layer, act in zip(relus, activations, strict=False):
        act = np.asarray(act, dtype=np.float32)
        per_unit_max = act.reshape(-1, act.shape[-1]).max(axis=0)
        layers.append(
            {
                "layer": layer.name,
                "dead_fraction": float((per_unit_max <= 0).mean()),
                "grad_norm": grads.get(layer.name, float("nan")),
            }
        )
    return step, layers


class Probe(keras.callbacks.Callback):
    """Measures the model on the probe images at step 0 and every `every` steps; stops after `steps`."""

    def __init__(self, label: str, probe_model, relus, x, y, steps: int, every: int):
        super().__init__()
        self.label, self.probe_model, self.relus, self.x, self.y = label, probe_model, relus, x, y
        self.total, self.every, self.step = steps, every, 0
        self.steps, self.layers = [], []

    def measure(self) -> None:
        row, per_layer = probe(self.model, self.probe_model, self.relus, self.x, self.y)
        self.steps.append({"recipe": self.label, "step": self.step, **row})
        self.layers += [{"recipe": self.label, "step": self.step, **r} for r in per_layer]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0 or self.step == self.total:
            self.measure()
        if self.step == self.total:
            self.model.stop_training = True


def replay(label: str, cfg: Model, seed: int, diagnose, arrays: dict, meta: dict) -> tuple[list, list]:
    """The first `diagnose.steps` training steps of `cfg` (whole batches only), measured."""
    cfg = cfg.replace(steps_per_execution=1)
    training = Training(f"diagnose {label}", cfg, seed, meta, arrays, validate=False, checks=False, quiet=True)
    model = training.model
    relus = relu_layers(model)
    probe_model = keras.Model(model.input, [layer.output for layer in relus] + [model.output])
    n = diagnose.probe_images
    x_probe = arrays["x_val"][:n].astype("float32")
    y_probe = one_hot(arrays["y_val"][:n], len(meta["classes"]))
    probe_cb = Probe(label, probe_model, relus, x_probe, y_probe, diagnose.steps, diagnose.every)
    probe_cb.set_model(model)
    probe_cb.measure()
    training.run([probe_cb], drop_remainder=True, progress_bar=False)
    last = probe_cb.steps[-1]
    print(
        f"diagnose {label}: after {last['step']} steps probe loss {last['probe_loss']:.4f}, accuracy "
        f"{last['probe_accuracy']:.3f}, logit spread {last['logit_std']:.4f}"
    )
    return probe_cb.steps, probe_cb.layers


def summarise(steps: pd.DataFrame, layers: pd.DataFrame, recipes: dict[str, Model]) -> dict:
    summary = {"ln_classes": math.log(10), "recipes": {}}
    for label, cfg in recipes.items():
        s = steps[steps.recipe == label].sort_values("step")
        last_step = int(s.step.max())
        final_layers = layers[(layers.recipe == label) & (layers.step == last_step)]
        summary["recipes"][label] = {
            "settings": {
                k: v
                for k, v in cfg.asdict().items()
                if k
                in (
                    "optimizer",
                    "learning_rate",
                    "batch_size",
                    "input_scaling",
                    "schedule",
                    "warmup_epochs",
                    "mixed_precision",
                    "augment_crop_padding",
                )
            },
            "steps": last_step,
            "final_probe_loss": float(s.probe_loss.iloc[-1]),
            "final_probe_accuracy": float(s.probe_accuracy.iloc[-1]),
            "final_logit_std": float(s.logit_std.iloc[-1]),
            "initial_logit_std": float(s.logit_std.iloc[0]),
            "dead_fraction": dict(zip(final_layers.layer, final_layers.dead_fraction.astype(float), strict=False)),
            "grad_norm": dict(zip(final_layers.layer, final_layers.grad_norm.astype(float), strict=False)),
        }
    return summary


def notebook_overrides(nb, name: str, cfg: Model) -> list[str]:
    """`dvc exp run -S` arguments that turn models.<name> into the notebook's recipe."""
    notebook = notebook_config(nb, cfg)
    changed = {k: v for k, v in notebook.asdict().items() if v is not None and v != getattr(cfg, k)}
    return [f"-S models.{name}.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in changed.items()]


if __name__ == "__main__":  # the -S arguments of experiments/notebook-alexnet.sh
    import sys

    from classic_cnns.params import load_or_exit

    params = load_or_exit()
    print(" ".join(notebook_overrides(params.diagnose.notebook, sys.argv[1], params.model(sys.argv[1]))))
