"""Tiny MNIST and CIFAR-10 in their official formats (IDX files, the pickled tar.gz), written
by the tests themselves: the project never needs the real datasets to be tested."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np


def _images(rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Noisy images whose brightness pattern depends on the label, so a network can learn them."""
    x = rng.integers(0, 60, size=(len(labels), *shape)).astype(np.int64)
    rows = shape[0]
    for i, label in enumerate(labels):
        band = slice(int(label) * rows // 10, (int(label) + 1) * rows // 10)
        x[i, band] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def write_mnist(folder: Path, n_train: int = 240, n_test: int = 80, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(n_train) % 10, np.arange(n_test) % 10
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(_images(rng, y_train, (28, 28))),
        "train-labels-idx1-ubyte.gz": idx_bytes(y_train.astype(np.uint8)),
        "t10k-images-idx3-ubyte.gz": idx_bytes(_images(rng, y_test, (28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(y_test.astype(np.uint8)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def cifar_archive(per_batch: int = 40, n_test: int = 80, seed: int = 1) -> bytes:
    """cifar-10-python.tar.gz in the official layout: pickled dicts, rows of 3072 bytes (CHW)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        batches = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
        for name, n in batches:
            labels = rng.permutation(np.arange(n) % 10)
            images = _images(rng, labels, (32, 32, 3)).transpose(0, 3, 1, 2).reshape(n, -1)
            payload = pickle.dumps(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels.tolist(),
                    b"data": images,
                    b"filenames": [b"x.png"] * n,
                }
            )
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def write_cifar(folder: Path, **kwargs) -> dict[str, str]:
    data = cifar_archive(**kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cifar-10-python.tar.gz").write_bytes(data)
    return {"cifar-10-python.tar.gz": hashlib.sha256(data).hexdigest()}


def write_spec(path: Path, sums: dict, urls: list[str] | None = None) -> Path:
    """A CLASSIC_CNN_DATASET_SPEC file: the fixtures' checksums and (by default) no official URLs,
    so a test never reaches beyond 127.0.0.1."""
    path.write_text(json.dumps({name: {"files": files, "urls": urls or []} for name, files in sums.items()}))
    return path
