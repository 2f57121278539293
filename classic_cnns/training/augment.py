"""Training-time augmentation: each epoch's random crops, flips and cutout (test-time views:
classic_cnns/evaluation/tta.py).

All randomness comes from (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def shift(x: np.ndarray, padding: int, dy: np.ndarray | int, dx: np.ndarray | int) -> np.ndarray:
    """Crop each image from its zero-padded copy at offset (dy, dx) in [0, 2 * padding]."""
    n, h, w = x.shape[:3]
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy, dx = np.broadcast_to(dy, (n,)), np.broadcast_to(dx, (n,))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout(x: np.ndarray, size: int, cy: np.ndarray, cx: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """DeVries & Taylor (2017): one size x size square per image, centred anywhere in the image
    at (cy, cx) (so it may be clipped at the border), set to `fill` (the mean pixel: zero after the model's
    normalisation)."""
    n, h, w = x.shape[:3]
    top, left = cy - size // 2, cx - size // 2
    rows = (np.arange(h)[None, :] >= top[:, None]) & (np.arange(h)[None, :] < top[:, None] + size)
    cols = (np.arange(w)[None, :] >= left[:, None]) & (np.arange(w)[None, :] < left[:, None] + size)
    mask = rows[:, :, None] & cols[:, None, :]
    return np.where(mask[..., None], fill.astype(x.dtype), x)


def epoch_data(
    x: np.ndarray, y: np.ndarray, cfg, seed: int, epoch: int, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """This epoch's shuffled (and, if `cfg` asks, cropped, flipped and cut out) training set, as
    float32. The random draws come first, from one generator of (seed, epoch); the images are then
    made in chunks on `workers` threads (default: one per CPU; NumPy's copies run without the GIL),
    which gives the same bytes as one thread would."""
    n, h, w = x.shape[:3]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    p = cfg.augment_crop_padding
    dy, dx = rng.integers(0, 2 * p + 1, size=(2, n)) if p else (None, None)
    flip = rng.random(n) < 0.5 if cfg.augment_flip else None
    cy, cx = (rng.integers(0, h, n), rng.integers(0, w, n)) if cfg.augment_cutout else (None, None)

    crops = np.empty_like(x)
    out = np.empty(x.shape, dtype="float32")
    bounds = _chunks(n, workers)

    def crop_and_flip(lo: int, hi: int) -> np.ndarray:
        part = x[order[lo:hi]]
        if p:
            part = shift(part, p, dy[lo:hi], dx[lo:hi])
        if flip is not None:
            part[flip[lo:hi]] = part[flip[lo:hi], :, ::-1]
        crops[lo:hi] = part
        # exact per-channel pixel sums (integers), for cutout's fill: the mean of the whole epoch
        return part.reshape(-1, x.shape[-1]).sum(axis=0, dtype=np.int64)

    with ThreadPoolExecutor(len(bounds)) as pool:
        sums = list(pool.map(lambda b: crop_and_flip(*b), bounds))
        if cfg.augment_cutout:
            fill = np.round(np.sum(sums, axis=0).astype(np.float64) / (n * h * w))
            size = cfg.augment_cutout

            def cut(lo: int, hi: int) -> None:
                out[lo:hi] = cutout(crops[lo:hi], size, cy[lo:hi], cx[lo:hi], fill)
        else:

            def cut(lo: int, hi: int) -> None:
                out[lo:hi] = crops[lo:hi]

        list(pool.map(lambda b: cut(*b), bounds))
    return out, y[order]


def _chunks(n: int, workers: int | None) -> list[tuple[int, int]]:
    workers = max(1, min(workers or os.cpu_count() or 1, 16, n // 2048 or 1))
    edges = np.linspace(0, n, workers + 1).astype(int)
    return list(zip(edges[:-1], edges[1:], strict=False))
