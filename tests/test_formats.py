import io
import pickle
import tarfile

import numpy as np
import pytest

from classic_cnns.data.datasets import REGISTRY, check
from classic_cnns.data.formats import FormatError, read_cifar10, read_idx, read_mnist
from tests.tiny_data import cifar_archive, idx_bytes, write_mnist


def test_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_truncated_idx_is_refused(tmp_path):
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    import gzip

    (tmp_path / "a.gz").write_bytes(gzip.compress(gzip.decompress(data)[:-5]))
    with pytest.raises(FormatError, match="header says"):
        read_idx(tmp_path / "a.gz")


def test_mnist_files_read_and_pad_to_32(tmp_path):
    write_mnist(tmp_path, n_train=30, n_test=10)
    x_train, y_train, x_test, y_test = read_mnist(tmp_path)
    assert x_train.shape == (30, 28, 28) and y_train.shape == (30,)
    padded, labels = check(REGISTRY["mnist"], x_train, y_train, "train")
    assert labels.dtype == np.uint8
    assert padded.shape == (30, 32, 32, 1)
    assert padded[:, :2].max() == 0 and padded[:, -2:].max() == 0
    np.testing.assert_array_equal(padded[:, 2:30, 2:30, 0], x_train)


def test_cifar_archive_is_read_without_extracting(tmp_path):
    (tmp_path / "c.tar.gz").write_bytes(cifar_archive(per_batch=4, n_test=6))
    x_train, y_train, x_test, y_test = read_cifar10(tmp_path / "c.tar.gz")
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (6, 32, 32, 3)
    assert x_train.dtype == np.uint8 and set(y_test) <= set(range(10))
    assert list(tmp_path.iterdir()) == [tmp_path / "c.tar.gz"]


def test_an_archive_member_that_climbs_out_is_never_written(tmp_path):
    """Members are read in memory, never extracted: a `../` path (tar path traversal) cannot write."""
    work = tmp_path / "work"
    work.mkdir()
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(cifar_archive(per_batch=4, n_test=6))) as src,
        tarfile.open(fileobj=buf, mode="w:gz") as tar,
    ):
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member))
        evil = tarfile.TarInfo("../../escaped.txt")
        evil.size = 5
        tar.addfile(evil, io.BytesIO(b"owned"))
    (work / "c.tar.gz").write_bytes(buf.getvalue())
    x_train, *_ = read_cifar10(work / "c.tar.gz")
    assert x_train.shape == (20, 32, 32, 3)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c.tar.gz", "work"]


def test_cifar_batch_that_smuggles_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        payload = pickle.dumps({b"data": Evil(), b"labels": [0]})
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (tmp_path / "c.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(FormatError, match="builtins.print"):
        read_cifar10(tmp_path / "c.tar.gz")
