"""Training speed: this pipeline's recipe against the notebook's way (plain `model.fit` on float32
arrays, batch 64), measured in the same run, with the machine's measured matmul rate as the peak.

    python -m bench.speed                      # both models, sizes that take a few minutes on CPU
    python -m bench.speed --images 512 --models lenet5   # a quick look
    ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.speed --models alexnet --precisions float32
        # TensorFlow's oneDNN kernels held to AVX2 (an estimate of an AVX2-only CPU; bfloat16 fails there)

Prints a table: model, mode, images/s, seconds for a full epoch (train split of the real dataset
size), achieved FLOP/s (3x the forward multiply-adds x 2 per image), the fraction of the matmul
peak measured here for that precision, and the speed-up over plain fit. Synthetic images: speed
does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from classic_cnns.analysis.diagnose import notebook_config
from classic_cnns.data.datasets import REGISTRY
from classic_cnns.environment import compute_precision
from classic_cnns.params import Model, load_params


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul in `dtype` through the active Keras backend (best of repeats)."""
    import keras

    a = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n)), dtype=dtype)
    b = keras.ops.convert_to_tensor(np.random.default_rng(1).standard_normal((n, n)), dtype=dtype)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        product = keras.ops.matmul(a, b)
        keras.ops.convert_to_numpy(keras.ops.cast(product[0, 0], "float32"))  # wait for it, copy one number
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def train_flops_per_image(model) -> float:
    from classic_cnns.model.networks import layer_table

    return 3 * 2 * float(layer_table(model)["multiply_adds"].sum())


def measure(cfg: Model, dataset: str, images: int, epochs: int = 2) -> tuple[float, float]:
    """(images/s, train FLOPs per image): the fastest of `epochs` timed epochs after one warm-up epoch."""
    from classic_cnns.training.session import Training

    shape = REGISTRY[dataset].prepared_shape
    meta = {"shape": list(shape), "mean": [100.0] * shape[-1], "std": [60.0] * shape[-1], "classes": list(range(10))}
    rng = np.random.default_rng(0)
    x, labels = rng.integers(0, 256, (images, *shape), dtype=np.uint8), rng.integers(0, 10, images)
    training = Training(
        "speed", cfg.replace(epochs=epochs + 1), 0, meta, {"x_train": x, "y_train": labels}, checks=False, quiet=True
    )
    model = training.run(progress_bar=False)
    return images / min(training.progress.history["epoch_seconds"][1:]), train_flops_per_image(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "alexnet"])
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        help="images per timed epoch (default: 55000 for lenet5, a full epoch; 3200 for alexnet)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["float32", "bfloat16"],
        default=["float32", "bfloat16"],
        help="the recipe's precisions to time (default: both); the plain fit is always float32",
    )
    args = parser.parse_args()
    params = load_params()
    precisions = sorted(set(args.precisions) | {"float32"})
    peaks = {precision: matmul_peak(precision) for precision in precisions}
    print("matmul peak measured here: " + ", ".join(f"{p} {peaks[p] / 1e9:.0f} GFLOP/s" for p in precisions))
    rows = []
    for name in args.models:
        cfg = params.model(name)
        images = args.images or (55_000 if cfg.architecture == "lenet5" else 3_200)
        plain = notebook_config(params.diagnose.notebook, cfg)
        recipe = cfg.replace(schedule="constant", warmup_epochs=0)
        modes = {"plain fit (notebook)": plain}  # then the recipe in each precision: what `auto` decides from
        for precision in ("bfloat16", "float32"):
            if precision in args.precisions:
                modes[f"pipeline recipe, {precision}"] = recipe.replace(mixed_precision=precision == "bfloat16")
        baseline = None
        for mode, mode_cfg in modes.items():
            rate, flops = measure(mode_cfg, cfg.dataset, images)
            baseline = baseline or rate
            precision, _ = compute_precision(mode_cfg.mixed_precision)
            peak = peaks[precision]
            rows.append(
                {
                    "model": name,
                    "mode": mode,
                    "batch": mode_cfg.batch_size,
                    "steps/exec": mode_cfg.steps_per_execution,
                    "precision": precision,
                    "images/s": round(rate),
                    "epoch s": round((REGISTRY[cfg.dataset].train_images - params.prepare.val_size) / rate, 1),
                    "GFLOP/s": round(rate * flops / 1e9, 1),
                    "of peak": f"{100 * rate * flops / peak:.0f}%",
                    "vs plain": f"{rate / baseline:.2f}x",
                }
            )
    import pandas as pd

    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
