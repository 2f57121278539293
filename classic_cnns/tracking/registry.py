"""A run's model: logged as the run's `model` artifact, found again by its file's sha256, and
registered. A registered model's `champion` alias points at the newest full-quality version: one
trained by `dvc repro` in the workspace (not a DVC experiment) on the whole dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from classic_cnns import environment, errors

CHAMPION = "champion"
INPUT_NOTE = (
    "Input: float32 images of the signature's shape holding raw pixel values 0-255, not scaled to 0-1 "
    "(the model standardises them itself); output: one probability per class."
)


def register(model_name: str, run_id: str, test_accuracy: float, full_quality: bool) -> None:
    """A version of the registered model for this run's model, made whole in one call (source, run,
    test accuracy and DVC experiment as tags, description), so a stop can never leave a version
    without them; a full-quality run's version also takes the `champion` alias (load it as
    models:/<name>@champion). Registering the same run at the same accuracy again (its training and
    then its evaluation) finds that version instead of making another."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    accuracy = f"{test_accuracy:.4f}"
    made = [
        v
        for v in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
        if v.tags.get("test_accuracy") == accuracy
    ]
    if made:
        version = made[0]
    else:
        source = client.get_run(run_id).data.tags.get(MODEL_URI_TAG, f"runs:/{run_id}/model")
        try:
            client.create_registered_model(model_name)
        except MlflowException as err:
            if "ALREADY_EXISTS" not in (err.error_code or ""):
                raise
        exp = os.environ.get("DVC_EXP_NAME")
        version = client.create_model_version(
            model_name,
            source,
            run_id=run_id,
            tags={"test_accuracy": accuracy, **({"dvc_exp_name": exp} if exp else {})},
            description=f"test accuracy {accuracy} (run {run_id}). {INPUT_NOTE}",
            model_id=source.removeprefix("models:/") if source.startswith("models:/") else None,
        )
    if full_quality:
        client.set_registered_model_alias(model_name, CHAMPION, version.version)
    print(
        f"registered {model_name} version {version.version}"
        + (f" as @{CHAMPION}" if full_quality else " (not full-quality: the champion alias stays where it was)")
    )


def is_full_quality(meta: dict) -> bool:
    """Trained in the workspace (not a DVC experiment) on the whole prepared dataset."""
    return not os.environ.get("DVC_EXP_NAME") and not meta.get("subset", False)


MODEL_SHA_TAG = "model_sha256"


def training_run_of(experiment: str, model_sha256: str):
    """The newest run of `experiment` that trained this model file (byte for byte), or None: the
    model files are written byte-stable, so the file names its run without a run id on disk."""
    found = mlflow.search_runs(
        experiment_names=[experiment],
        output_format="list",
        max_results=1,
        filter_string=f"tags.{MODEL_SHA_TAG} = '{model_sha256}'",
        order_by=["attributes.start_time DESC"],
    )
    return found[0] if found else None


MODEL_URI_TAG = "model_uri"  # the logged model (models:/m-...), which evaluate registers


def log_keras_model(model, model_file) -> None:
    """The model (`model_file`, its .keras file), logged from the active run as `<run name>-model`:
    a pyfunc (classic_cnns/tracking/keras_pyfunc.py) with a signature, an input example on the raw
    0-255 scale and the packages it needs; its URI is tagged on the run, so that registering it names
    the logged model itself. The Keras model: `mlflow.pyfunc.load_model(uri).unwrap_python_model().model`."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    shape = tuple(model.input_shape[1:])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, *shape))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, model.output_shape[-1]))]),
    )
    example = np.linspace(0.0, 255.0, int(np.prod(shape)), dtype="float32").reshape(1, *shape)  # the scale
    requirements = [
        f"{pkg}=={ver}"
        for pkg, ver in environment.package_versions().items()
        if pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "numpy", "mlflow")
    ]
    run = mlflow.active_run()
    with errors.signals_held():  # MLflow loads and calls the model to check the example
        info = mlflow.pyfunc.log_model(
            name=f"{run.info.run_name}-model",
            python_model=str(Path(__file__).with_name("keras_pyfunc.py")),
            artifacts={"keras_model": str(model_file)},
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
        )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)


def run_of_model_file(experiment: str, name: str, cfg, meta: dict, model, model_file) -> str:
    """The MLflow run that trained this model file (found by its sha256); for a model trained
    against another store (e.g. fetched with `dvc pull`), a new run of this store that holds it."""
    from classic_cnns import outputs
    from classic_cnns.tracking.runs import start_training_run

    sha = outputs.sha256(model_file)
    found = training_run_of(experiment, sha)
    if found:
        return found.info.run_id
    print(f"{name}: no run in this MLflow store trained {model_file} (sha256 {sha[:12]}...); logging it in a new run")
    with start_training_run(name, cfg, meta, {"model.name": name}, None) as run:
        mlflow.set_tags({MODEL_SHA_TAG: sha, "trained_elsewhere": "true"})
        log_keras_model(model, model_file)
        return run.info.run_id
