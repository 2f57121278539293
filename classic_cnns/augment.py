"""Training-time augmentation: each epoch's random crops, flips and cutout (test-time views:
classic_cnns/tta.py).

All randomness comes from (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted one would.
"""
from __future__ import annotations

import numpy as np


def shift(x: np.ndarray, padding: int, dy: np.ndarray | int, dx: np.ndarray | int) -> np.ndarray:
    """Crop each image from its zero-padded copy at offset (dy, dx) in [0, 2 * padding]."""
    n, h, w = x.shape[:3]
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy, dx = np.broadcast_to(dy, (n,)), np.broadcast_to(dx, (n,))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout(x: np.ndarray, size: int, rng: np.random.Generator, fill: np.ndarray) -> np.ndarray:
    """DeVries & Taylor (2017): one size x size square per image, centred anywhere in the image
    (so it may be clipped at the border), set to `fill` (the mean pixel: zero after the model's
    normalisation)."""
    n, h, w = x.shape[:3]
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    top, left = cy - size // 2, cx - size // 2
    rows = (np.arange(h)[None, :] >= top[:, None]) & (np.arange(h)[None, :] < top[:, None] + size)
    cols = (np.arange(w)[None, :] >= left[:, None]) & (np.arange(w)[None, :] < left[:, None] + size)
    mask = rows[:, :, None] & cols[:, None, :]
    return np.where(mask[..., None], fill.astype(x.dtype), x)


def epoch_data(x: np.ndarray, y: np.ndarray, cfg, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """This epoch's shuffled (and, if `cfg` asks, cropped, flipped and cut out) training set."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    if cfg.augment_crop_padding:
        p = cfg.augment_crop_padding
        dy, dx = rng.integers(0, 2 * p + 1, size=(2, len(x)))
        x = shift(x, p, dy, dx)
    if cfg.augment_flip:
        flip = rng.random(len(x)) < 0.5
        x = x.copy()
        x[flip] = x[flip, :, ::-1]
    if cfg.augment_cutout:
        fill = np.round(x.reshape(-1, x.shape[-1]).mean(axis=0))
        x = cutout(x, cfg.augment_cutout, rng, fill)
    return x.astype("float32"), y
