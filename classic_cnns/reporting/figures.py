"""The report's figures as PNGs (no timestamps: same results, same bytes): a model's in its section's
folder, reports/sections/<name>/; the report's own (the diagnosis) in reports/figures/."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: before pyplot is imported, hence the E402 markers below
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from classic_cnns import outputs  # noqa: E402
from classic_cnns.paths import FIGURES, SECTIONS  # noqa: E402

KINDS = ("learning-curves", "confusion", "per-class", "misclassified", "filters")  # <model>-<kind>.png


def of_model(name: str) -> list[Path]:
    """The figures of model `name` that exist: exactly <name>-<kind>.png, never another model's whose
    name starts with this one's (lenet5-fashion-confusion.png is not lenet5's)."""
    folder = SECTIONS / name
    return [folder / f"{name}-{kind}.png" for kind in KINDS if (folder / f"{name}-{kind}.png").exists()]


def _save(fig, filename: str, folder: Path = FIGURES) -> Path:
    path = folder / filename
    fig.tight_layout()
    with outputs.atomic(path) as tmp:
        fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def learning_curves(name: str, history: pd.DataFrame) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=False):
        ax.plot(history["epoch"], history[metric], marker="o", ms=3, label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{name}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, f"{name}-learning-curves.png", SECTIONS / name)


def confusion(name: str, matrix: pd.DataFrame) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    image = ax.imshow(matrix.values, cmap="Blues")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=60, ha="right")
    ax.set_yticks(range(len(matrix.index)), matrix.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"{name}: confusion matrix (test)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, f"{name}-confusion.png", SECTIONS / name)


def per_class(name: str, scores: pd.DataFrame) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3))
    positions = np.arange(len(scores))
    ax.bar(positions - 0.2, scores["precision"], 0.4, label="precision")
    ax.bar(positions + 0.2, scores["recall"], 0.4, label="recall")
    ax.set_xticks(positions, scores["class"].astype(str), rotation=45, ha="right")
    ax.set_ylim(max(0.0, float(scores[["precision", "recall"]].min().min()) - 0.1), 1.0)
    ax.set_title(f"{name}: precision and recall per class (test)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="lower right")
    return _save(fig, f"{name}-per-class.png", SECTIONS / name)


def misclassified(name: str, images: np.ndarray, actual: list[str], predicted: list[str]) -> Path:
    """Up to 16 misclassified test images, titled true -> predicted."""
    count = len(images)
    cols = 8
    rows = max(1, -(-count // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.8 + 0.3))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < count:
            img = images[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_title(f"{actual[i]}\n→ {predicted[i]}", fontsize=7)
    fig.suptitle(f"{name}: misclassified test images (true → predicted)", fontsize=9)
    return _save(fig, f"{name}-misclassified.png", SECTIONS / name)


def first_layer_filters(name: str, kernel: np.ndarray) -> Path:
    """Each first-layer filter (kh, kw, channels_in) scaled to 0..1 on its own."""
    n = kernel.shape[-1]
    cols = min(16, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6 + 0.4))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            f = kernel[..., i]
            f = (f - f.min()) / (np.ptp(f) or 1.0)
            ax.imshow(f[..., 0] if f.shape[-1] == 1 else f, cmap="gray" if f.shape[-1] == 1 else None)
    fig.suptitle(f"{name}: first-layer filters ({kernel.shape[0]}x{kernel.shape[1]})", fontsize=9)
    return _save(fig, f"{name}-filters.png", SECTIONS / name)


def diagnostics(steps: pd.DataFrame, layers: pd.DataFrame) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, style in (("notebook", "-"), ("recipe", "--")):
        s = steps[steps.recipe == label]
        axes[0].plot(s.step, s.probe_loss, style, marker="o", ms=3, label=label)
        dead = layers[layers.recipe == label].groupby("step").dead_fraction.mean()
        axes[1].plot(dead.index, 100 * dead.values, style, marker="o", ms=3, label=label)
    axes[0].axhline(np.log(10), color="grey", lw=0.8, ls=":")
    axes[0].set_title("loss on probe images (dotted: ln 10)")
    axes[1].set_title("dead ReLU units, mean over layers (%)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, "diagnostics.png")
