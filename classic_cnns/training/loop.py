"""The training loop every training uses (train, the claims grid, the diagnosis, the benchmarks).

One `model.fit` call per epoch on that epoch's data (shuffled and augmented from (seed, epoch)
only, classic_cnns/training/augment.py, made on a second thread while the epoch before trains), so a
run resumed at any epoch sees exactly the batches an uninterrupted one would. What happens around an
epoch is a Keras callback: `Progress` (history, wall time, a line per epoch), `BestWeights` (early
stopping), MLflow logging (classic_cnns/tracking/epochs.py), the health checks
(classic_cnns/training/health.py) and checkpoints (classic_cnns/training/checkpoint.py).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from classic_cnns.errors import check_interrupted_while_held, signals_held
from classic_cnns.training.augment import epoch_data
from classic_cnns.training.distribute import Placement, local_share


class Progress(keras.callbacks.Callback):
    """Each epoch's logs (loss, accuracy, val_loss, val_accuracy) and wall time, kept in `history`
    (resumable: pass the history so far), with a line per epoch on stdout."""

    def __init__(self, label: str, epochs: int, history: dict | None = None, seconds: float = 0.0, quiet: bool = False):
        super().__init__()
        self.quiet = quiet
        self.label, self.total = label, epochs
        self.history: dict[str, list[float]] = history if history is not None else {}
        self.seconds = seconds
        self.last: dict[str, float] = {}

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        self.last = {**{k: float(v) for k, v in (logs or {}).items()}, "epoch_seconds": seconds}
        for k, v in self.last.items():
            self.history.setdefault(k, []).append(v)
        self.seconds += seconds
        shown = " ".join(f"{k} {v:.4f}" for k, v in self.last.items() if k != "epoch_seconds")
        if not self.quiet:
            print(f"{self.label} epoch {epoch + 1}/{self.total}: {shown} ({seconds:.1f} s)", flush=True)


class Interruptible(keras.callbacks.Callback):
    """The safe points of Keras's work, which runs inside `signals_held()` (a signal's exception raised
    inside TensorFlow comes out as another, or is printed): SIGTERM or Ctrl-C stops a training or a
    prediction at the next batch's end (classic_cnns/errors.py)."""

    def on_train_batch_end(self, batch, logs=None):
        check_interrupted_while_held()

    def on_test_batch_end(self, batch, logs=None):
        check_interrupted_while_held()

    def on_predict_batch_end(self, batch, logs=None):
        check_interrupted_while_held()

    def on_epoch_end(self, epoch, logs=None):
        check_interrupted_while_held()


class BestWeights(keras.callbacks.Callback):
    """Early stopping on validation accuracy across the per-epoch fits: remembers the best epoch's
    weights, stops after `patience` epochs without a better one; `restore()` puts them back."""

    def __init__(
        self,
        label: str,
        patience: int,
        best: float | None = None,
        best_epoch: int = 0,
        weights: list[np.ndarray] | None = None,
        stopped: bool = False,
    ):
        super().__init__()
        self.label, self.patience = label, patience
        self.best, self.best_epoch, self.weights = best, best_epoch, weights
        self.improved, self.stopped = False, stopped

    def on_epoch_end(self, epoch, logs=None):
        self.improved = self.best is None or logs["val_accuracy"] > self.best
        if self.improved:
            self.best, self.best_epoch = float(logs["val_accuracy"]), epoch + 1
            self.weights = [np.array(v) for v in self.model.variables]
        if epoch + 1 - self.best_epoch >= self.patience:
            print(
                f"{self.label}: validation accuracy has not improved for {self.patience} epochs; "
                f"stopping and keeping epoch {self.best_epoch}'s weights",
                flush=True,
            )
            self.stopped = self.model.stop_training = True

    def restore(self) -> None:
        if self.weights is not None:
            for variable, value in zip(self.model.variables, self.weights, strict=False):
                variable.assign(value)


def train_epochs(
    model,
    x: np.ndarray,
    y: np.ndarray,
    cfg,
    seed: int,
    validation=None,
    start_epoch: int = 0,
    callbacks: list | tuple = (),
    drop_remainder: bool = False,
    progress_bar: bool | None = None,
    placement: Placement = Placement(),
) -> None:
    """Train `model` from `start_epoch` to cfg.epochs (or until a callback stops it) on the
    epoch data of (x, one-hot y). `drop_remainder` leaves out each epoch's last partial batch.
    With several devices (classic_cnns/training/distribute.py) this process feeds its share of each batch."""
    if progress_bar is None:
        progress_bar = sys.stdout.isatty()
    if start_epoch >= cfg.epochs:
        return
    if validation is not None:
        validation = local_share(tuple(validation), cfg.batch_size, placement)
    batch_size = placement.local_batch(cfg.batch_size)
    with ThreadPoolExecutor(1) as prefetch, signals_held():  # a signal: at a batch's end (Interruptible)
        # the next epoch's data is made while this one trains
        upcoming = prefetch.submit(epoch_data, x, y, cfg, seed, start_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            x_epoch, y_epoch = upcoming.result()
            if epoch + 1 < cfg.epochs:
                upcoming = prefetch.submit(epoch_data, x, y, cfg, seed, epoch + 1)
            if drop_remainder:
                full = len(x_epoch) // cfg.batch_size * cfg.batch_size
                x_epoch, y_epoch = x_epoch[:full], y_epoch[:full]
            x_epoch, y_epoch = local_share((x_epoch, y_epoch), cfg.batch_size, placement)
            model.fit(
                x_epoch,
                y_epoch,
                batch_size=batch_size,
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=validation,
                shuffle=False,
                verbose=1 if progress_bar else 0,
                callbacks=[Interruptible(), *callbacks],
            )
            del x_epoch, y_epoch
            if model.stop_training:
                upcoming.cancel()
                break
