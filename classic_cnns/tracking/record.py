"""A model's MLflow run holds its whole record: training (params, per-epoch metrics, model), then
its evaluation (test metrics, per-class files) and its registered version, and is FINISHED only then.

Evaluate adds the evaluation to the run it reopens (`evaluation_run`). A training whose model DVC
already holds evaluated (a fresh clone without a DVC remote retrains LeNet-5 bit-identically; DVC
then skips `evaluate`, whose outputs match) completes its own run from those files instead
(`complete_from_dvc`), so a run never waits for an evaluation that will not come. Either way the
registry gets one version per run and accuracy (classic_cnns/tracking/registry.py). The decision
and its reasons: docs/reliability.md, "The MLflow record".
"""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import mlflow

from classic_cnns import costs, paths
from classic_cnns.tracking import registry
from classic_cnns.tracking.runs import end_run, interrupted_status, model_name, owned_tags

EVALUATION_FILES = ("metrics.json", "evaluation.json", "per_class.csv", "confusion.csv")  # in reports/<name>/


def log_evaluation(name: str, metrics: dict, details: dict, cost: dict) -> None:
    """The evaluation's numbers and files, added to the active run (the one that trained the model)."""
    # tags, not params: a rerun with other evaluation knobs re-scores the same training run
    mlflow.set_tags(
        {
            "evaluate.batch_size": str(details["inference_batch_size"]),
            "evaluate.test_views": str(details["test_views"]),
            "evaluate.test_images": str(details["test_images"]),
        }
    )
    measured = {k: v for k, v in {**details, **cost}.items() if isinstance(v, float)}  # speed, size, memory
    mlflow.log_metrics({**metrics, **measured})
    for f in EVALUATION_FILES:
        mlflow.log_artifact(str(paths.model_reports(name) / f), artifact_path="evaluation")


def register(name: str, dataset: str, run_id: str, metrics: dict, full_quality: bool) -> None:
    """The run's model registered under its MLflow name (runs.model_name), the run's record marked complete."""
    registry.register(model_name(name, dataset), run_id, metrics["test_accuracy"], full_quality)
    mlflow.set_tag("evaluation", "complete")


@contextlib.contextmanager
def evaluation_run(run_id: str, name: str):
    """The model's run, reopened (RUNNING, owned by this process) while evaluate adds to it. Ended
    FINISHED once the evaluation is logged and registered; a stop before then (Ctrl-C, SIGTERM: KILLED;
    a failure: FAILED) registers nothing and tags the run `evaluation: interrupted ...`."""
    mlflow.start_run(run_id=run_id)
    try:
        mlflow.set_tags({**owned_tags(), "evaluation": "running"})
        yield
    except BaseException as exc:
        with contextlib.suppress(Exception):
            mlflow.set_tag("evaluation", f"interrupted ({type(exc).__name__}): rerun `dvc repro evaluate@{name}`")
        end_run(interrupted_status(exc))
        raise
    mlflow.end_run()


def held_by_dvc(name: str) -> bool:
    """Whether the evaluation files here are those of the model now in models/<name>/: DVC's own
    `dvc status evaluate@<name>` finds the stage up to date (outputs present and made from this very
    model, with these params and code), so `dvc repro` will skip it. Asked from inside the running
    `dvc repro`, which holds DVC's per-path read/write locks: this read-only question goes without
    them. False wherever DVC cannot say (outside a DVC project, an error)."""
    try:
        import dvc.rwlock
        from dvc.repo import Repo

        with mock.patch.object(dvc.rwlock, "rwlock", lambda *args, **kwargs: contextlib.nullcontext()):
            with Repo(".") as repo:
                return not repo.status(targets=[f"evaluate@{name}"])
    except Exception:
        return False


def complete_from_dvc(name: str, dataset: str, run_id: str, full_quality: bool) -> bool:
    """At the end of a training (its run active): if DVC holds this model's evaluation, log it and
    register the model, completing the run; else tag the run `evaluation: pending` (evaluate will).
    Returns whether it completed the run."""
    if not held_by_dvc(name):
        mlflow.set_tag("evaluation", f"pending: `dvc repro evaluate@{name}` adds it")
        return False
    folder = paths.model_reports(name)
    metrics, details = (json.loads((folder / f).read_text()) for f in ("metrics.json", "evaluation.json"))
    log_evaluation(name, metrics, details, costs.read("evaluate", name))
    mlflow.set_tag("evaluation_from", "DVC's evaluation of this very model (evaluate@ up to date, skipped)")
    register(name, dataset, run_id, metrics, full_quality)
    print(f"{name}: DVC holds this model's evaluation (evaluate@{name} is up to date); added it to the run")
    return True
