"""Per-epoch metrics to MLflow, as a Keras callback that a training adds (classic_cnns/training/session.py)."""

from __future__ import annotations

import time

import keras
import mlflow
from mlflow.entities import Metric

from classic_cnns.tracking import store


class EpochLogger(keras.callbacks.Callback):
    """Logs each finished epoch's metrics (from a training's Progress history) to run `run_id`, each epoch
    once: epochs the run already holds (`logged`, e.g. of a resumed run) are not logged again, and
    epochs the tracking store did not take are retried after the next epoch and by `flush()`, so a
    server that goes away stalls nothing and costs no epoch."""

    def __init__(self, label: str, progress, run_id: str, logged: int = 0):
        super().__init__()
        self.label, self.progress, self.run_id, self.logged = label, progress, run_id, logged
        self.failing = False

    def on_epoch_end(self, epoch, logs=None):
        try:
            if self.failing:  # a quick look first: a server that hangs would cost 3 timeouts an epoch
                store.check_server(store.tracking_uri(), timeout_s=2.0)
            self.flush()
        except store.TrackingUnavailable as exc:
            if not self.failing:
                print(f"{self.label}: {exc}; training goes on, and the epochs are logged when it answers", flush=True)
            self.failing = True

    def flush(self) -> None:
        """Log every finished epoch the run lacks; TrackingUnavailable if the store fails."""
        steps = range(self.logged + 1, self.progress.epochs + 1)
        if not steps:
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(values[step - 1]), now, step)
            for step in steps
            for key, values in self.progress.history.items()
        ]
        uri = store.tracking_uri()
        doing = f"logging epoch {steps[0]}" if len(steps) == 1 else f"logging epochs {steps[0]}-{steps[-1]}"
        with store.failures_named(uri, doing):
            for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
                mlflow.MlflowClient().log_batch(self.run_id, metrics=metrics[i : i + 1000])
        if self.failing:
            print(f"{self.label}: the tracking store answers again; logged epochs {steps[0]}-{steps[-1]}", flush=True)
        self.logged, self.failing = max(self.logged, self.progress.epochs), False
