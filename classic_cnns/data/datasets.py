"""The dataset registry: what each dataset is called, its classes, its images, its official files.

A dataset is an entry of params.yaml `data`. The registry below knows MNIST and CIFAR-10 (their
published files, checksums and formats); any other entry declares what it holds (title, class
names, image shape) and comes as an .npz in keras.datasets layout. Everything downstream (stage
output, MLflow tags, the report's prose and tables) names a dataset by what this module says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from classic_cnns.data import formats
from classic_cnns.errors import UserError


@dataclass(frozen=True)
class Dataset:
    name: str  # the key in params.yaml `data`
    title: str  # "MNIST", "CIFAR-10"
    classes: tuple[str, ...]  # class names in label order
    image_shape: tuple[int, int, int]  # (height, width, channels) of the images as stored
    pad: int = 0  # zero border added on each side when preparing (MNIST: 2, 28x28 -> 32x32 as in LeNet-5)
    layout: str = "npz"  # how the raw files are laid out: idx (MNIST), cifar-python, npz
    urls: tuple[str, ...] = ()  # official base URLs, tried in order
    files: dict[str, str] = field(default_factory=dict)  # official file name -> sha256
    published: dict[str, str] = field(default_factory=dict)  # architecture -> a published result on the official data
    train_images: int = 0  # images in the official training split (0: not known)

    @property
    def prepared_shape(self) -> tuple[int, int, int]:
        h, w, c = self.image_shape
        return h + 2 * self.pad, w + 2 * self.pad, c


REGISTRY = {
    "mnist": Dataset(
        name="mnist",
        title="MNIST",
        classes=tuple(str(i) for i in range(10)),
        image_shape=(28, 28, 1),
        pad=2,
        layout="idx",
        urls=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        # the four original IDX files (md5 f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d... as the MNIST site lists)
        files={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        published={"lenet5": "LeCun et al. (1998) reported 99.05% for LeNet-5 without distortions"},
        train_images=60_000,
    ),
    "cifar10": Dataset(
        name="cifar10",
        title="CIFAR-10",
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        image_shape=(32, 32, 3),
        layout="cifar-python",
        urls=("https://www.cs.toronto.edu/~kriz/",),
        files={"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
        train_images=50_000,
    ),
}


class DatasetError(UserError, ValueError):
    """A dataset's declaration or its data is not what the pipeline can use; says which and why."""


def get(name: str, source) -> Dataset:
    """The dataset of params.yaml `data.<name>` (a params.DataSource): the registry's entry with
    what the params override, or the params' own declaration for a dataset the registry lacks."""
    known = REGISTRY.get(name)
    overrides = {k: v for k, v in (("title", source.title), ("pad", source.pad)) if v is not None}
    if source.classes is not None:
        overrides["classes"] = tuple(source.classes)
    if source.image_shape is not None:
        if len(source.image_shape) != 3 or min(source.image_shape) < 1:
            raise DatasetError(
                f"params.yaml: 'data.{name}.image_shape' must be [height, width, channels], got {source.image_shape}"
            )
        overrides["image_shape"] = tuple(source.image_shape)
    if known is not None:
        if source.source != "official":
            overrides["layout"] = "npz"
        return replace(known, **overrides)
    missing = [k for k in ("title", "classes", "image_shape") if k not in overrides]
    if source.source == "official" or missing:
        raise DatasetError(
            f"params.yaml: 'data.{name}' is not a dataset the pipeline knows ({', '.join(REGISTRY)}): give its "
            "source (the path or URL of an .npz with x_train, y_train, x_test, y_test) and declare "
            + ", ".join(missing or ["title", "classes", "image_shape"])
        )
    if len(overrides["classes"]) < 2:
        raise DatasetError(f"params.yaml: 'data.{name}.classes' must name at least 2 classes")
    return Dataset(name=name, **overrides)


def read_raw(ds: Dataset, folder: Path) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) from what the download stage left in `folder`."""
    if ds.layout == "npz":  # the one file of a local copy, under its own name
        (name,) = json.loads((folder / "provenance.json").read_text())["files"]
        return formats.read_npz(folder / name)
    if ds.layout == "idx":
        return formats.read_mnist(folder)
    return formats.read_cifar10(folder / "cifar-10-python.tar.gz")


def check(ds: Dataset, x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as (N, H, W, C) uint8 of the declared shape and labels in range, or a DatasetError
    naming what was expected and what was found."""
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim == 3 and ds.image_shape[2] == 1:
        x = x[..., None]
    where = f"{ds.title} ({ds.name}) x_{split}"
    if x.ndim != 4 or tuple(x.shape[1:]) != ds.image_shape:
        raise DatasetError(
            f"{where}: images are {x.shape[1:]}, expected {ds.image_shape} (height, width, "
            f"channels); declare data.{ds.name}.image_shape if your copy differs on purpose"
        )
    if x.dtype != np.uint8:
        raise DatasetError(f"{where}: pixels are {x.dtype}, expected uint8 (0..255)")
    if len(x) != len(y):
        raise DatasetError(f"{where}: {len(x)} images but {len(y)} labels in y_{split}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(ds.classes)):
        raise DatasetError(
            f"{ds.title} ({ds.name}) y_{split}: labels must be whole numbers 0..{len(ds.classes) - 1} "
            f"({len(ds.classes)} classes), found {y.dtype} {y.min()}..{y.max()}"
        )
    if ds.pad:
        x = np.pad(x, ((0, 0), (ds.pad, ds.pad), (ds.pad, ds.pad), (0, 0)))
    return x, y.astype(np.uint8)
