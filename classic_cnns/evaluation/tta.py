"""Test-time augmentation: the fixed views (AlexNet's centre and corner crops, mirrored) whose
predictions evaluation averages. Kept apart from classic_cnns/training/augment.py so that changing
evaluation does not make the training stages stale.
"""

from __future__ import annotations

import numpy as np

from classic_cnns.training.augment import shift
from classic_cnns.training.loop import Interruptible


def tta_views(cfg, enabled: bool) -> list[tuple[int, int, bool]]:
    """(dy, dx, mirrored) of every view test-time augmentation averages over, AlexNet's way: the
    centre and four corner crops (shifted by half the training crop padding of `cfg`), each also
    mirrored when training flipped. Just the image itself when not `enabled`."""
    s, flip = cfg.augment_crop_padding // 2, cfg.augment_flip
    if not enabled:
        return [(0, 0, False)]
    offsets = [(0, 0)] + ([(-s, -s), (-s, s), (s, -s), (s, s)] if s else [])
    return [(dy, dx, m) for dy, dx in offsets for m in ((False, True) if flip else (False,))]


def predict(
    model, x: np.ndarray, views: list[tuple[int, int, bool]], batch_size: int, centre: np.ndarray | None = None
) -> np.ndarray:
    """Class probabilities averaged over `views` (tta_views; one view: a plain predict).
    `centre`: the model's probabilities for `x` itself (the first view), when already computed."""
    pad = max(max(abs(dy), abs(dx)) for dy, dx, _ in views)
    total = centre
    for dy, dx, mirrored in views[1 if centre is not None else 0 :]:
        view = shift(x, pad, pad + dy, pad + dx) if pad else x
        if mirrored:
            view = view[:, :, ::-1]
        view = np.ascontiguousarray(view, dtype="float32")
        probs = model.predict(view, batch_size=batch_size, verbose=0, callbacks=[Interruptible()])
        total = probs if total is None else total + probs
    return total / len(views)
