"""Where one training step's time goes, against the time its FLOPs need at the measured matmul peak.

    python -m bench.breakdown                    # AlexNet, the pipeline recipe's batch and precision
    python -m bench.breakdown --model lenet5 --batch 32

Times, on one synthetic batch: every convolution and dense layer alone (forward and backward:
weight gradients, and input gradients except for the first layer, which needs none), the rest of
the network (the full forward and backward minus those layers: pooling, dropout, the input
normalisation, casts, the loss), the optimizer's update, and the whole train step. Each row's
"at peak" is its FLOPs over the matmul rate measured in the same run. TensorFlow backend only
(gradients through tf.GradientTape).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bench.speed import matmul_peak
from classic_cnns.data.datasets import REGISTRY
from classic_cnns.environment import compute_precision
from classic_cnns.params import load_params


def seconds_per_call(fn, calls: int = 5, repeats: int = 3) -> float:
    """Best-of-`repeats` mean time of `calls` calls of a tf.function (after one warm-up call)."""
    import tensorflow as tf

    def run_once():
        out = fn()
        for t in tf.nest.flatten(out):
            np.asarray(t)

    run_once()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            run_once()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def layer_forward_backward(layer, batch: int, first: bool):
    """A tf.function running a copy of `layer` forward and backward on a random batch."""
    import keras
    import tensorflow as tf

    clone = layer.__class__.from_config(layer.get_config())
    shape = (batch, *layer.input.shape[1:])
    clone.build(shape)
    x = tf.constant(np.random.default_rng(0).standard_normal(shape), dtype=clone.compute_dtype)

    @tf.function
    def run():
        with tf.GradientTape() as tape:
            if not first:
                tape.watch(x)
            loss = tf.reduce_sum(keras.ops.cast(clone(x), "float32"))
        return tape.gradient(loss, clone.trainable_variables + ([] if first else [x]))

    return run


def layer_rows(model, batch: int) -> list[dict]:
    """Each layer with weights: the seconds of its forward and backward passes, and their FLOPs."""
    from classic_cnns.model.networks import multiply_adds

    rows = []
    weighted = [layer for layer in model.layers if multiply_adds(layer)]
    for i, layer in enumerate(weighted):
        passes = 2 if i == 0 else 3  # forward, weight gradient, input gradient (not for the first layer)
        flops = passes * 2 * multiply_adds(layer) * batch
        seconds = seconds_per_call(layer_forward_backward(layer, batch, first=i == 0))
        rows.append({"part": f"{layer.name} ({type(layer).__name__})", "seconds": seconds, "flops": flops})
    return rows


def step_functions(model, x, y):
    """(forward and backward pass, optimizer update, whole train step) as compiled TensorFlow functions."""
    import tensorflow as tf

    variables = model.trainable_variables
    model.optimizer.build(variables)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = model.loss(y, model(x, training=True))
        return tape.gradient(loss, variables)

    grads = forward_backward()

    @tf.function
    def update():
        model.optimizer.apply(grads, variables)

    @tf.function
    def train_step():
        model.optimizer.apply(forward_backward(), variables)

    return forward_backward, update, train_step


def breakdown(name: str, batch: int | None = None) -> tuple[list[dict], float]:
    import keras
    import tensorflow as tf

    from bench.speed import train_flops_per_image
    from classic_cnns.model.recipe import build_compiled, seed_everything

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("bench.breakdown needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    params = load_params()
    cfg = params.model(name).replace(schedule="constant", warmup_epochs=0)
    batch = batch or cfg.batch_size
    seed_everything(0)
    shape = REGISTRY[cfg.dataset].prepared_shape
    meta = {"shape": list(shape), "mean": [100.0] * shape[-1], "std": [60.0] * shape[-1], "classes": list(range(10))}
    model = build_compiled(cfg, meta, 100)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (batch, *shape)).astype("float32"))
    y = tf.constant(keras.utils.to_categorical(rng.integers(0, 10, batch), 10))
    precision, _ = compute_precision(cfg.mixed_precision)
    peak = matmul_peak(precision)
    forward_backward, update, train_step = step_functions(model, x, y)
    rows = layer_rows(model, batch)
    layers_seconds = sum(row["seconds"] for row in rows)
    whole = seconds_per_call(forward_backward)
    rows.append(
        {
            "part": "other layers (pooling, dropout, normalisation, loss)",
            "seconds": max(0.0, whole - layers_seconds),
            "flops": 0,
        }
    )
    rows.append({"part": "optimizer update", "seconds": seconds_per_call(update), "flops": 0})
    step = seconds_per_call(train_step)
    rows.append({"part": "whole train step", "seconds": step, "flops": train_flops_per_image(model) * batch})
    for row in rows:
        row["at peak"] = row["flops"] / peak
    print(f"{name}: batch {batch}, {precision}; matmul peak measured here {peak / 1e9:.0f} GFLOP/s")
    return rows, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--batch", type=int, default=0, help="images per step (default: the recipe's batch_size)")
    args = parser.parse_args()
    rows, step = breakdown(args.model, args.batch or None)
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                "part": r["part"],
                "ms": round(1e3 * r["seconds"], 1),
                "share of step": f"{100 * r['seconds'] / step:.0f}%",
                "GFLOP/s": round(r["flops"] / r["seconds"] / 1e9) if r["flops"] else "",
                "ms at peak": round(1e3 * r["at peak"], 1) if r["flops"] else "",
                "x peak time": f"{r['seconds'] / r['at peak']:.2f}" if r["flops"] else "",
            }
            for r in rows
        ]
    )
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
