"""Where the data lives, and the prepared splits every training and evaluation reads.

data/raw/<dataset>/ holds what the download stage fetched (with provenance.json);
data/prepared/<dataset>.npz holds uint8 NHWC images and uint8 labels for train, val and test, and
data/prepared/<dataset>.json their shapes, class names, class counts, the training split's
per-channel mean/std and the provenance of the raw files.
"""

from __future__ import annotations

import json

import numpy as np

from classic_cnns.data.datasets import Dataset, DatasetError, check
from classic_cnns.errors import UserError
from classic_cnns.paths import prepared, project_root


def local_source(source: str) -> str:
    """A data source as the stage can open it: a URL as is, a path relative to the project root
    (also from a `dvc exp run --temp` copy, which lacks the git-ignored data/external/)."""
    return source if "://" in source else str(project_root() / source)


def split(
    ds: Dataset, arrays, seed: int, val_size: int, train_limit: int = 0, test_limit: int = 0
) -> dict[str, np.ndarray]:
    """Checked, padded images with a seeded validation split (and optional seeded limits)."""
    x_train, y_train, x_test, y_test = arrays
    x_train, y_train = check(ds, x_train, y_train, "train")
    x_test, y_test = check(ds, x_test, y_test, "test")
    if val_size >= len(x_train):
        raise DatasetError(
            f"prepare.val_size={val_size} leaves no training images "
            f"({ds.name} has {len(x_train)}); lower it in params.yaml"
        )
    order = np.random.default_rng(seed).permutation(len(x_train))
    val, train = order[:val_size], order[val_size:]
    if train_limit:
        train = train[:train_limit]
    test = np.arange(len(x_test))
    if test_limit:  # a seeded sample, kept in order: test sets may be grouped by class
        test = np.sort(np.random.default_rng(seed + 1).permutation(len(x_test))[:test_limit])
    return {
        "x_train": x_train[train],
        "y_train": y_train[train],
        "x_val": x_train[val],
        "y_val": y_train[val],
        "x_test": x_test[test],
        "y_test": y_test[test],
    }


def summary(ds: Dataset, arrays: dict[str, np.ndarray], provenance: dict) -> dict:
    x = arrays["x_train"].astype(np.float64)
    return {
        "dataset": ds.name,
        "title": ds.title,
        "classes": list(ds.classes),
        "shape": list(arrays["x_train"].shape[1:]),
        "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")},
        "train_class_counts": np.bincount(arrays["y_train"], minlength=len(ds.classes)).tolist(),
        # Per-channel pixel statistics (0..255 scale) of the training split only.
        "mean": x.mean(axis=(0, 1, 2)).tolist(),
        "std": x.std(axis=(0, 1, 2)).tolist(),
        "provenance": provenance,
    }


def load_split(dataset: str) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays of `dataset` and their summary (data/prepared/<dataset>.json)."""
    npz_file, json_file = prepared(dataset)
    for path in (json_file, npz_file):
        if not path.exists():
            raise UserError(f"{path} is missing: run `dvc repro prepare@{dataset}` first")
    meta = json.loads(json_file.read_text())
    with np.load(npz_file) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, meta
