"""Stage `train`: fit one model of params.yaml `models` and log it to MLflow.

    python -m stages.train lenet5

Reads data/prepared/<dataset>.npz; writes models/<name>/model.keras and reports/<name>/ history.csv,
architecture.csv, training.json (classic_cnns/training/results.py); its costs to reports/costs/ and
reports/costs.md. Every epoch is checkpointed to
checkpoints/<name>/: a killed run rerun with `dvc repro` continues in the same MLflow run and ends
with the same weights; a tracking store away at the end keeps the checkpoint, and a rerun logs what
is missing without training again. When DVC already holds this very model's evaluation (it will
skip evaluate), the run takes it and the model is registered here (classic_cnns/tracking/record.py).
A training that diverges or does not learn writes nothing and marks its run FAILED.
"""

from __future__ import annotations

import sys

import keras

from classic_cnns import environment, paths
from classic_cnns.data.prepared import load_split
from classic_cnns.errors import TrainingFailed, finishing, run_stage
from classic_cnns.params import flatten, load_or_exit, stage_args
from classic_cnns.reporting import costs_page
from classic_cnns.tracking import record, registry, runs, store
from classic_cnns.tracking.epochs import EpochLogger
from classic_cnns.training import distribute, results
from classic_cnns.training.checkpoint import Checkpoint, EveryEpoch, fingerprint
from classic_cnns.training.session import Training

KEPT = (
    "; the trained model is kept in {}/: rerun once the store answers, which logs what is missing (to a new "
    "run if the store no longer has this one) and "
    "writes the outputs without training again"
)


def train(params, name: str) -> dict | None:
    cfg = params.model(name)
    placement = distribute.place(cfg.devices, cfg.batch_size)  # before the model is built
    if placement.chief:
        store.use_store(params.mlflow.experiment)  # a tracking fault costs seconds, before any work
    arrays, meta = load_split(cfg.dataset)
    training = Training(name, cfg, params.seed, meta, arrays, params.health)
    if not placement.chief:  # feeds its share of every batch; the first process writes and logs
        print(f"{name}: process {placement.index + 1} of {placement.processes}, {placement.devices} devices in all")
        training.run(placement=placement)
        return None
    ckpt = Checkpoint(paths.CHECKPOINTS / name, fingerprint(cfg.asdict(), params.seed, meta))
    if placement.processes > 1:  # the other processes start at epoch 1 too
        ckpt.clear()
    state = training.resume(ckpt)
    runs.abandon((ckpt.abandoned or {}).get("run_id"), "not resumed: its checkpoint is from other params or data")
    training.announce(f"{placement.describe(environment.device())} ({keras.backend.backend()} backend)", state)
    logged = {"seed": params.seed, **flatten(cfg, "model"), "model.name": name, **flatten(params.health, "health")}
    kept = KEPT.format(ckpt.folder)
    try:
        with runs.training_run(name, cfg, meta, logged, state.get("run_id"), kept) as (run, logged_epochs):
            logger = EpochLogger(name, training.progress, run.info.run_id, logged_epochs)
            every_epoch = EveryEpoch(
                ckpt, training.progress, training.best, {"run_id": run.info.run_id}, state.get("best_state")
            )
            model = training.run([logger], [every_epoch], placement)
            if placement.processes > 1:
                model = distribute.to_one_device(model, training.build)
            with store.failures_named(store.tracking_uri(), "logging the trained model", after=kept):
                logger.flush()
                summary = results.write_outputs(
                    name,
                    model,
                    training.progress,
                    training.best,
                    len(training.x),
                    placement,
                    costs_page.about(name, cfg),
                )
                costs_page.write()
                finishing()  # from here the stage completes: a signal now waits for its end (exit 0)
                record.complete_from_dvc(name, cfg.dataset, run.info.run_id, registry.is_full_quality(meta))
    except TrainingFailed:
        ckpt.clear()
        raise
    ckpt.clear()
    print(
        f"{name}: trained {summary['epochs']} epochs in {summary['train_seconds']:.1f} s; val accuracy "
        f"{summary['final_val_accuracy']:.4f}; MLflow run {run.info.run_id}"
    )
    return summary


def main(argv: list[str]) -> int:
    params = load_or_exit()
    train(params, stage_args("train", argv, model=params.models).model)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
