"""Training health as Keras callbacks: a non-finite loss stops at once; after
`health.check_after_epochs` epochs, a loss above twice ln(classes) is a run that diverged, and a
loss still at ln(classes) with chance accuracy is a network that did not learn.
Either raises TrainingFailed with the model, the epoch, the symptom and the likely fixes, each fix
named by its params.yaml key under `knobs` (models.<name>, or a grid cell's ablations.variants.<variant>)."""

from __future__ import annotations

import math

import keras

from classic_cnns.errors import TrainingFailed


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    def __init__(self, name: str, knobs: str | None = None):
        super().__init__()
        self.name, self.knobs, self.epoch = name, knobs or f"models.{name}", 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            name, k = self.name, self.knobs
            raise TrainingFailed(
                "non-finite loss",
                self.epoch,
                (
                    f"{name}: training loss became {float(loss)} at epoch {self.epoch}, step {batch + 1}. "
                    f"Likely fixes: lower {k}.learning_rate (e.g. 10x), add warm-up "
                    f"({k}.warmup_epochs), enable {k}.batch_norm, or check the inputs."
                ),
            )


def check_learning(name: str, epoch: int, logs: dict, health, num_classes: int, knobs: str | None = None) -> None:
    """After health.check_after_epochs epochs, a loss at ln(classes) with chance accuracy is a
    network that has not learned anything: stop rather than report it as a result."""
    k = knobs or f"models.{name}"
    chance_loss, chance_acc = math.log(num_classes), 1.0 / num_classes
    if epoch < health.check_after_epochs:
        return
    if logs["loss"] > 2 * chance_loss:  # JAX and PyTorch clip the loss where TensorFlow gives nan
        raise TrainingFailed(
            "diverged",
            epoch,
            (
                f"{name}: diverged: after epoch {epoch} the training loss is {logs['loss']:.4f}, more than twice "
                f"ln({num_classes}) = {chance_loss:.4f}, what a uniform guess scores. Likely fixes: lower "
                f"{k}.learning_rate (e.g. 10x), add warm-up ({k}.warmup_epochs), enable "
                f"{k}.batch_norm, or check the inputs."
            ),
        )
    if (
        abs(logs["loss"] - chance_loss) <= health.loss_margin
        and logs["accuracy"] <= chance_acc + health.accuracy_margin
    ):
        raise TrainingFailed(
            "did not learn",
            epoch,
            (
                f"{name}: did not learn: after epoch {epoch} the training loss is {logs['loss']:.4f}, "
                f"ln({num_classes}) = {chance_loss:.4f}, what a uniform guess scores, and accuracy "
                f"{logs['accuracy']:.3f} is at chance ({chance_acc:.2f}): most ReLUs have likely died "
                f"(`dvc repro diagnose` measures it). Likely fixes: standardise the inputs "
                f"({k}.input_scaling: standardize), lower {k}.learning_rate (e.g. 10x), add "
                f"warm-up ({k}.warmup_epochs), enable {k}.batch_norm, or use "
                f"{k}.kernel_initializer: he_normal."
            ),
        )


class LearningCheck(keras.callbacks.Callback):
    def __init__(self, name: str, health, num_classes: int, knobs: str | None = None):
        super().__init__()
        self.name, self.health, self.num_classes, self.knobs = name, health, num_classes, knobs

    def on_epoch_end(self, epoch, logs=None):
        check_learning(self.name, epoch + 1, logs, self.health, self.num_classes, self.knobs)
