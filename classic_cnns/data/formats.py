"""Readers for the datasets' published formats, each returning (x, y) uint8 arrays.

- MNIST: gzip-compressed IDX files (big-endian header, then raw bytes).
- CIFAR-10: cifar-10-python.tar.gz, read member by member from the archive (nothing is extracted
  to disk) and unpickled with an unpickler that only builds plain containers and numpy arrays.
- A local copy: an .npz in keras.datasets layout, read with allow_pickle=False.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from classic_cnns.errors import UserError

CIFAR_TRAIN_MEMBERS = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_MEMBERS = ["cifar-10-batches-py/test_batch"]


class FormatError(UserError, ValueError):
    pass


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (.gz): magic 0x0000 08 <ndim>, then ndim big-endian uint32 sizes, then uint8."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise FormatError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise FormatError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, body has {body.size}")
    return body.reshape(dims)


def read_mnist(folder: Path) -> tuple[np.ndarray, ...]:
    x_train = read_idx(folder / "train-images-idx3-ubyte.gz")
    y_train = read_idx(folder / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    return x_train, y_train, x_test, y_test


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR batches are pickled dicts of bytes, lists and numpy arrays; allow nothing else."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise FormatError(f"CIFAR batch refers to {module}.{name}, which a data file never needs")


def _cifar_batches(tar: tarfile.TarFile, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        try:
            member = tar.getmember(name)
        except KeyError:
            raise FormatError(f"the CIFAR-10 archive has no member {name}") from None
        if not member.isfile():
            raise FormatError(f"CIFAR-10 archive member {name} is not a regular file")
        batch = _SafeUnpickler(io.BytesIO(tar.extractfile(member).read()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # NCHW rows -> NHWC
        ys.append(np.asarray(batch[b"labels"], dtype=np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def read_cifar10(archive: Path) -> tuple[np.ndarray, ...]:
    with tarfile.open(archive, "r:gz") as tar:
        x_train, y_train = _cifar_batches(tar, CIFAR_TRAIN_MEMBERS)
        x_test, y_test = _cifar_batches(tar, CIFAR_TEST_MEMBERS)
    return x_train, y_train, x_test, y_test


def read_npz(path: Path) -> tuple[np.ndarray, ...]:
    with np.load(path, allow_pickle=False) as npz:
        return tuple(np.asarray(npz[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
