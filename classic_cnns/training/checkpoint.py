"""Per-epoch training checkpoints that make a killed run resumable, bit for bit.

A checkpoint holds every model variable (weights, batch-norm statistics, dropout RNG state),
every optimizer variable (step count, moments), the epoch count, the history so far and the MLflow
run id, under a fingerprint of everything that determines the weights (the model's params, the
seed, the prepared data). One with another fingerprint is never resumed from. Files are written
to a temporary name and renamed, meta.json last, so a kill mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import zipfile
from pathlib import Path

import keras
import numpy as np

from classic_cnns.errors import UserError
from classic_cnns.outputs import atomic, write_json

KILL_AFTER_EPOCH_ENV = "CLASSIC_CNN_KILL_AFTER_EPOCH"  # for tests: kill the process after that epoch ...
KILL_SIGNAL_ENV = "CLASSIC_CNN_KILL_SIGNAL"  # ... with this signal (default SIGKILL) ...
KILL_BEFORE_CHECKPOINT_ENV = "CLASSIC_CNN_KILL_BEFORE_CHECKPOINT"  # ... before its checkpoint if set


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def get_values(variables) -> list[np.ndarray]:
    return [np.array(v) for v in variables]


def set_values(variables, values) -> None:
    variables = list(variables)
    if len(variables) != len(values):
        raise ValueError(f"checkpoint holds {len(values)} arrays, the model has {len(variables)} variables")
    for var, value in zip(variables, values, strict=False):
        var.assign(value)


def _write_npz(path: Path, arrays: list[np.ndarray]) -> None:
    with atomic(path) as tmp:
        np.savez(tmp, *arrays)


def _read_npz(path: Path) -> list[np.ndarray]:
    with np.load(path) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


class Checkpoint:
    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.abandoned: dict | None = None

    @property
    def meta_path(self) -> Path:
        return self.folder / "meta.json"

    def load(self, model) -> dict | None:
        """Restore model and optimizer from a matching checkpoint; return its meta, or None. One
        from other params or data is deleted, its meta kept in `abandoned` (e.g. its MLflow run id)."""
        self.abandoned = None
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("fingerprint") != self.fingerprint:
                print(f"checkpoint in {self.folder} is from other params or data: not resuming from it")
                self.abandoned = meta
                self.clear()
                return None
            model.optimizer.build(model.trainable_variables)
            set_values(model.variables, _read_npz(self.folder / meta["model_state"]))
            set_values(model.optimizer.variables, _read_npz(self.folder / meta["optimizer_state"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise UserError(
                f"the checkpoint in {self.folder} is broken ({type(exc).__name__}: {str(exc)[:160]}); delete it "
                f"(`rm -r {self.folder}`) to train from the first epoch"
            ) from None
        return meta

    def best_weights(self, meta: dict) -> list[np.ndarray] | None:
        best = meta.get("best_state")
        return _read_npz(self.folder / best) if best else None

    def save(self, model, meta: dict, best: list[np.ndarray] | None = None) -> dict:
        """Write the model's and optimizer's variables and `meta`; `best`: new best weights (else
        the best weights of meta["best_state"] are kept). Returns the meta written."""
        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = meta["epoch"]
        meta = {
            **meta,
            "fingerprint": self.fingerprint,
            "model_state": f"model-{epoch}.npz",
            "optimizer_state": f"optimizer-{epoch}.npz",
        }
        _write_npz(self.folder / meta["model_state"], get_values(model.variables))
        _write_npz(self.folder / meta["optimizer_state"], get_values(model.optimizer.variables))
        if best is not None:
            meta["best_state"] = f"best-{epoch}.npz"
            _write_npz(self.folder / meta["best_state"], best)
        write_json(self.meta_path, meta)
        keep = {meta["model_state"], meta["optimizer_state"], meta.get("best_state"), "meta.json"}
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink()
        return meta

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class EveryEpoch(keras.callbacks.Callback):
    """Checkpoints after every epoch: the model and optimizer, the epoch, the history and time so
    far (a loop.Progress), early stopping's best weights (a loop.BestWeights, or None) and `extra`
    (e.g. the MLflow run id)."""

    def __init__(
        self, checkpoint: Checkpoint, progress, best=None, extra: dict | None = None, best_state: str | None = None
    ):
        super().__init__()
        self.checkpoint, self.progress, self.best, self.extra = checkpoint, progress, best, extra or {}
        self.best_state = best_state

    def on_epoch_end(self, epoch, logs=None):
        if os.environ.get(KILL_BEFORE_CHECKPOINT_ENV):
            self._kill_if_due(epoch)
        best = self.best
        state = {
            **self.extra,
            "epoch": epoch + 1,
            "history": self.progress.history,
            "train_seconds": self.progress.seconds,
            "best_val_accuracy": best.best if best else None,
            "best_epoch": best.best_epoch if best else 0,
            "best_state": self.best_state,
            "stopped": bool(best and best.stopped),
        }
        written = self.checkpoint.save(self.model, state, best.weights if best and best.improved else None)
        self.best_state = written.get("best_state")
        self._kill_if_due(epoch)

    @staticmethod
    def _kill_if_due(epoch: int) -> None:
        if os.environ.get(KILL_AFTER_EPOCH_ENV) == str(epoch + 1):
            os.kill(os.getpid(), signal.Signals[os.environ.get(KILL_SIGNAL_ENV, "SIGKILL")])
