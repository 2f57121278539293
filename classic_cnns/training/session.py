"""One way to set up and run a training, used by the train stage, the claims grid's cells, diagnose's
replay, bench/speed.py and the device check (bench/device.py).

`Training` seeds every generator, turns the labels one-hot, builds and compiles the model of a
validated `models.<name>` config (classic_cnns/model/recipe.py) and runs it epoch by epoch
(classic_cnns/training/loop.py) with the health checks; a caller adds what it needs as Keras
callbacks (MLflow logging, early stopping, checkpoints, probes) and may resume from a checkpoint.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np

from classic_cnns.model.recipe import build_compiled, seed_everything
from classic_cnns.training.checkpoint import Checkpoint
from classic_cnns.training.distribute import Placement
from classic_cnns.training.health import LearningCheck, StopOnNonFiniteLoss
from classic_cnns.training.loop import BestWeights, Progress, train_epochs


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return keras.utils.to_categorical(labels, classes)


class Training:
    """A seeded, compiled model of `cfg` for the data `meta` describes, and its training on
    arrays["x_train"], arrays["y_train"] (labels), validated on arrays["x_val"], arrays["y_val"]
    where given and `validate`. `health` (params.yaml `health`) adds the learning check;
    `checks=False` leaves out every health check (diagnose replays recipes that fail, to measure how);
    `quiet` prints no line per epoch."""

    def __init__(
        self,
        label: str,
        cfg,
        seed: int,
        meta: dict,
        arrays: dict[str, np.ndarray],
        health=None,
        validate: bool = True,
        checks: bool = True,
        quiet: bool = False,
        knobs: str | None = None,  # where its params live, for the health checks' fixes (models.<label>)
    ):
        self.label, self.cfg, self.seed, self.meta = label, cfg, seed, meta
        classes = len(meta["classes"])
        seed_everything(seed)
        self.x, self.y = arrays["x_train"], one_hot(arrays["y_train"], classes)
        self.validation = None
        if validate and "x_val" in arrays:
            self.validation = (arrays["x_val"].astype("float32"), one_hot(arrays["y_val"], classes))
        self.build = functools.partial(build_compiled, cfg, meta, math.ceil(len(self.x) / cfg.batch_size))
        self.model = self.build()
        self.progress = Progress(label, cfg.epochs, quiet=quiet)
        self.checks = [StopOnNonFiniteLoss(label, knobs)] if checks else []
        self.learning_check = [LearningCheck(label, health, classes, knobs)] if checks and health else []
        self.best = BestWeights(label, cfg.early_stopping_patience) if cfg.early_stopping_patience else None
        self.start_epoch, self.stopped = 0, False

    def announce(self, where: str, state: dict) -> None:
        """One line: what trains on what, where; `state`: the checkpoint resumed from, if any."""
        print(
            f"{self.label}: {self.cfg.architecture} on {self.meta['provenance']['title']}, {len(self.x)} training "
            f"images, {self.model.count_params():,} parameters; training on {where} in {self.precision()}"
            + (f"; resuming after epoch {state['epoch']}" if state else ""),
            flush=True,
        )

    def precision(self) -> str:
        """'bfloat16 (auto: why)' or 'float32 (set in params.yaml)': what the model computes in."""
        from classic_cnns.environment import compute_precision

        return "{} ({})".format(*compute_precision(self.cfg.mixed_precision))

    def resume(self, checkpoint: Checkpoint) -> dict:
        """Continue from `checkpoint` if it matches (model, optimizer, history, early stopping's
        state); its meta (with the caller's extras, e.g. the MLflow run id), or {} for none."""
        state = checkpoint.load(self.model) or {}
        if state:
            self.start_epoch, self.stopped = state["epoch"], state.get("stopped", False)
            self.progress = Progress(self.label, self.cfg.epochs, state["history"], state["train_seconds"])
            if self.best:
                self.best = BestWeights(
                    self.label,
                    self.cfg.early_stopping_patience,
                    state.get("best_val_accuracy"),
                    state.get("best_epoch", 0),
                    checkpoint.best_weights(state),
                    self.stopped,
                )
        return state

    def run(
        self,
        observers=(),
        after_checks=(),
        placement: Placement = Placement(),
        drop_remainder: bool = False,
        progress_bar: bool | None = None,
    ):
        """Train to cfg.epochs (or until a callback stops it). `observers` see every epoch, before
        the learning check (a failing epoch is still logged); `after_checks` only the healthy ones
        (checkpoints). Early stopping's best weights are restored at the end. Returns the model."""
        if not self.stopped:
            callbacks = [
                *self.checks,
                self.progress,
                *observers,
                *self.learning_check,
                *([self.best] if self.best else []),
                *after_checks,
            ]
            train_epochs(
                self.model,
                self.x,
                self.y,
                self.cfg,
                self.seed,
                self.validation,
                self.start_epoch,
                callbacks,
                drop_remainder=drop_remainder,
                progress_bar=progress_bar,
                placement=placement,
            )
        if self.best:
            self.best.restore()
        return self.model
