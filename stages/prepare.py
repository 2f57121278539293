"""Stage `prepare`: raw files -> compact uint8 arrays with a seeded validation split.

    python -m stages.prepare mnist

Writes data/prepared/<dataset>.npz (x/y for train, val, test; images NHWC uint8, labels uint8)
and data/prepared/<dataset>.json (shapes, class counts, normalisation statistics computed from the
training split only, and the provenance of the raw files). MNIST is zero-padded 28x28 -> 32x32, as
in the LeNet-5 paper.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from stages.download import RAW_DIR
from stages.formats import read_raw
from stages.params import DATASETS, Params, load_or_exit

PREPARED_DIR = Path("data/prepared")
NUM_CLASSES = 10
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


class PrepareError(ValueError):
    pass


def to_nhwc32(x: np.ndarray) -> np.ndarray:
    """Images as (N, 32, 32, C) uint8; 28x28 digits get a 2-pixel zero border."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:3] == (28, 28):
        x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    if x.shape[1:3] != (32, 32):
        raise PrepareError(f"images are {x.shape[1:3]}, expected 28x28 or 32x32")
    if x.dtype != np.uint8:
        raise PrepareError(f"images are {x.dtype}, expected uint8 pixels 0..255")
    return x


def split(params: Params, dataset: str, arrays) -> dict[str, np.ndarray]:
    x_train, y_train, x_test, y_test = arrays
    x_train, x_test = to_nhwc32(x_train), to_nhwc32(x_test)
    y_train, y_test = np.asarray(y_train).reshape(-1), np.asarray(y_test).reshape(-1)
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
            raise PrepareError(f"{dataset}: {name} has labels outside 0..{NUM_CLASSES - 1}")
    cfg = params.prepare
    if cfg.val_size >= len(x_train):
        raise PrepareError(f"prepare.val_size={cfg.val_size} leaves no training images "
                           f"({dataset} has {len(x_train)}); lower it in params.yaml")
    order = np.random.default_rng(params.seed).permutation(len(x_train))
    val, train = order[:cfg.val_size], order[cfg.val_size:]
    if cfg.train_limit:
        train = train[:cfg.train_limit]
    test = np.arange(len(x_test))
    if cfg.test_limit:  # a seeded sample, kept in order: test sets may be grouped by class
        test = np.sort(np.random.default_rng(params.seed + 1).permutation(len(x_test))[:cfg.test_limit])
    return {
        "x_train": x_train[train], "y_train": y_train[train].astype(np.uint8),
        "x_val": x_train[val], "y_val": y_train[val].astype(np.uint8),
        "x_test": x_test[test], "y_test": y_test[test].astype(np.uint8),
    }


def summary(dataset: str, arrays: dict[str, np.ndarray], provenance: dict) -> dict:
    x = arrays["x_train"].astype(np.float64)
    return {
        "dataset": dataset,
        "classes": CLASS_NAMES[dataset],
        "shape": list(arrays["x_train"].shape[1:]),
        "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")},
        "train_class_counts": np.bincount(arrays["y_train"], minlength=NUM_CLASSES).tolist(),
        # Per-channel pixel statistics (0..255 scale) of the training split only.
        "mean": x.mean(axis=(0, 1, 2)).tolist(),
        "std": x.std(axis=(0, 1, 2)).tolist(),
        "provenance": provenance,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in DATASETS:
        print(f"usage: python -m stages.prepare {{{','.join(DATASETS)}}}", file=sys.stderr)
        return 2
    dataset = argv[0]
    params = load_or_exit()
    raw = RAW_DIR / dataset
    try:
        provenance = json.loads((raw / "provenance.json").read_text())
        arrays = split(params, dataset, read_raw(dataset, raw))
    except (ValueError, OSError) as exc:
        print(f"error: prepare {dataset}: {exc}", file=sys.stderr)
        return 1
    PREPARED_DIR.mkdir(parents=True, exist_ok=True)
    info = summary(dataset, arrays, provenance)
    npz, meta = PREPARED_DIR / f"{dataset}.npz", PREPARED_DIR / f"{dataset}.json"
    np.savez(npz.with_suffix(".tmp.npz"), **arrays)
    npz.with_suffix(".tmp.npz").replace(npz)
    meta.write_text(json.dumps(info, indent=2) + "\n")
    print(f"{dataset}: train {info['sizes']['train']}, val {info['sizes']['val']}, "
          f"test {info['sizes']['test']} images of {tuple(info['shape'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
