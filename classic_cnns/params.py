"""params.yaml -> one validated, typed Params object (pydantic). Every stage reads its knobs from here.

Unknown keys, missing keys, wrong types and out-of-range values fail before any work is done, in
one line naming the key and what is allowed (classic_cnns/paramtrace.py words pydantic's errors).

Each stage declares in dvc.yaml exactly the params it reads; classic_cnns/paramtrace.py records
what a stage reads, so that the tests can compare it with dvc.lock.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from classic_cnns.paramtrace import TRACE_ENV, ParamsError, Section, check, record, start_tracing, worded

__all__ = ["TRACE_ENV", "ParamsError", "Params", "Model", "Budget", "DataSource", "load_params", "flatten"]

Optimizer = Literal["adam", "adamw", "sgd"]
Scaling = Literal["standardize", "unit", "none"]
Count = Annotated[int, Field(ge=0)]  # a number of images; 0 = all
Rate = Annotated[float, Field(ge=1e-8, le=10.0)]
Batch = Annotated[int, Field(ge=1, le=65536)]
Epochs = Annotated[int, Field(ge=1, le=10000)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Text = Annotated[str, Field(min_length=1)]


class DataSource(Section):
    """One dataset. `source`: 'official' downloads the published files of a dataset the registry
    knows (classic_cnns/data/datasets.py); anything else is the path (relative to the project) or
    http(s) URL of an .npz laid out like keras.datasets.<name>.load_data(). A dataset the registry
    does not know declares what it holds: title, class names, image shape (and a zero border)."""

    source: Text = "official"
    title: Text | None = None  # as reports and MLflow name it; default: the registry's
    classes: Annotated[list[Text], Field(min_length=1)] | None = None  # class names, in label order
    image_shape: Annotated[list[int], Field(min_length=1)] | None = None  # [height, width, channels] as stored
    pad: Annotated[int, Field(ge=0, le=64)] | None = None  # zero border added on each side


class Prepare(Section):
    val_size: Annotated[int, Field(ge=1)] = 5000
    train_limit: Count = 0  # 0 = the whole training split
    test_limit: Count = 0  # 0 = the whole test set


class Model(Section):
    architecture: Literal["lenet5", "alexnet"]
    dataset: Text  # an entry of `data`
    # Optimisation
    optimizer: Optimizer = "adam"
    learning_rate: Rate = 1e-3  # peak rate
    momentum: Annotated[float, Field(ge=0.0, le=0.999)] = 0.0  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: Fraction = 0.0  # decoupled
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: Annotated[int, Field(ge=0, le=1000)] = 0  # linear warm-up
    label_smoothing: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    batch_size: Batch = 64
    epochs: Epochs = 5
    early_stopping_patience: Count = 0  # 0 = off
    # Augmentation (training images only): random crop after zero-padding, horizontal flip,
    # cutout (one square per image set to the mean pixel)
    augment_crop_padding: Annotated[int, Field(ge=0, le=16)] = 0
    augment_flip: bool = False
    augment_cutout: Annotated[int, Field(ge=0, le=64)] = 0  # square side, 0 = off
    # Inputs: standardize = (x - mean) / std per channel from the training split; unit = x / 255
    # (the reference notebook's); none = raw 0..255 pixels
    input_scaling: Scaling = "standardize"
    # Additions to the architecture, off by default and named in the report when on
    batch_norm: bool = False
    kernel_initializer: Literal["glorot_uniform", "he_normal", "he_uniform"] = "glorot_uniform"
    # The architecture's own choices; null (or left out) = as in the notebook (LeNet-5: tanh,
    # average pooling, no dropout, 5x5 first kernel; AlexNet: relu, max, 0.5, 11x11)
    activation: Literal["tanh", "relu"] | None = None
    pooling: Literal["average", "max"] | None = None
    dropout: Annotated[float, Field(ge=0.0, le=0.95)] | None = None  # after hidden dense layers
    first_kernel: Annotated[int, Field(ge=1, le=31)] | None = None
    # Speed
    steps_per_execution: Annotated[int, Field(ge=1, le=10000)] = 1
    # bfloat16 compute, float32 weights and output; auto: where it trains faster (environment.bfloat16_pays)
    mixed_precision: bool | str = False
    # Data-parallel training (JAX backend): 1, N or "all" devices; batch_size stays the global batch
    devices: int | str = 1

    @field_validator("mixed_precision", mode="plain")
    @classmethod
    def _precision(cls, value):
        if not (isinstance(value, bool) or value == "auto"):
            raise ValueError(f"must be true, false or auto, got {value!r}")
        return value

    @field_validator("devices", mode="plain")
    @classmethod
    def _devices(cls, value):
        ok = value == "all" or (isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"must be a whole number or 'all', got {value!r}")
        if value != "all" and value < 1:
            raise ValueError(f"must be >= 1, got {value!r}")
        return value


class Health(Section):
    """A run whose training loss stays within loss_margin of ln(classes) with accuracy within
    accuracy_margin of chance after check_after_epochs epochs did not learn; it is stopped."""

    check_after_epochs: Annotated[int, Field(ge=1)] = 2
    loss_margin: Fraction = 0.05
    accuracy_margin: Fraction = 0.05


class NotebookRecipe(Section):
    """The reference notebook's training settings; everything else as Model's defaults."""

    optimizer: Optimizer = "adam"
    learning_rate: Rate = 1e-3
    batch_size: Batch = 64
    input_scaling: Scaling = "unit"


class Diagnose(Section):
    """Replays the first `steps` training steps of `model` with its own recipe and with the
    notebook's, measuring every `every` steps on `probe_images` validation images."""

    model: Text = "alexnet"
    steps: Annotated[int, Field(ge=1)] = 400
    every: Annotated[int, Field(ge=1)] = 25
    probe_images: Annotated[int, Field(ge=1)] = 256
    notebook: NotebookRecipe = Field(default_factory=NotebookRecipe)


class Budget(Section):
    """What each cell of the grid trains on: epochs, and training/validation/test images (0 = all)."""

    epochs: Epochs = 30
    train_limit: Count = 0
    val_limit: Count = 0
    test_limit: Count = 0


class Ablations(Section):
    """The claims grid (ablations/dvc.yaml): each variant is a models entry (`base`) with some
    knobs changed, trained once per seed at this budget (epochs, training/validation/test images)
    and scored on single test views."""

    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [1, 2, 3]
    epochs: Epochs = 8
    train_limit: Count = 7000  # 0 = the whole training split
    val_limit: Count = 2000  # 0 = the whole validation split
    test_limit: Count = 0  # 0 = the whole test set
    variants: Annotated[dict[str, dict], Field(min_length=1)] = {}
    # the same grid at full size (ablations/full-size/dvc.yaml): results in ablations/results-full/
    full_size: Budget = Field(default_factory=Budget)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError("must not repeat a value")
        return seeds

    def changes(self, variant: str) -> dict:
        """The variant's entry as written: its base and the knobs it changes."""
        key = f"ablations.variants.{variant}"
        check(variant in self.variants, key, f"is not a variant (have: {', '.join(self.variants)})")
        for knob in self.variants[variant]:
            record(f"{key}.{knob}")
        return dict(self.variants[variant])

    def model(self, params: Params, variant: str, size: str = "quick") -> Model:
        """The variant's full, validated recipe: its base model's, its changes, the epochs of the
        budget `size` names (quick: this section's; full: full_size's)."""
        key = f"ablations.variants.{variant}"
        changes = self.changes(variant)
        base = changes.pop("base", None)
        check("epochs" not in changes, f"{key}.epochs", "is set by the grid's budget; remove it here")
        check(base in params.models, f"{key}.base", f"must name an entry of 'models' ({', '.join(params.models)})")
        epochs = self.full_size.epochs if size == "full" else self.epochs
        raw = {**params.models[base].asdict(), **changes, "epochs": epochs}
        return validated(Model, raw, key)


class Evaluate(Section):
    batch_size: Batch = 512
    # Per model: average the test predictions over the centre, four shifted corners and (if
    # training flipped) their mirrors, as AlexNet did. Evaluation only: training is unchanged.
    test_time_augmentation: dict[str, bool] = {}

    def tta(self, model: str) -> bool:
        record(f"evaluate.test_time_augmentation.{model}")
        return self.test_time_augmentation[model]


class Mlflow(Section):
    experiment: Text = "classic-cnns"


class Params(Section):
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)]
    data: Annotated[dict[str, DataSource], Field(min_length=1)]
    prepare: Prepare
    models: Annotated[dict[str, Model], Field(min_length=1)]
    health: Health
    diagnose: Diagnose
    evaluate: Evaluate
    mlflow: Mlflow
    ablations: Ablations = Field(default_factory=Ablations)

    def check_references(self) -> None:
        """What one section says about another: datasets, models, evaluation, variants."""
        from classic_cnns.data import datasets

        for name, source in self.data.items():
            try:
                datasets.get(name, source)  # a dataset the registry lacks must declare its layout
            except datasets.DatasetError as exc:
                raise ParamsError(str(exc)) from None
        for name, cfg in self.models.items():
            check(
                cfg.dataset in self.data,
                f"models.{name}.dataset",
                f"must name an entry of 'data' ({', '.join(self.data)}); got {cfg.dataset!r}",
            )
        for name in set(self.models) ^ set(self.evaluate.test_time_augmentation):
            check(
                False,
                f"evaluate.test_time_augmentation.{name}",
                "is missing: add true or false for each model" if name in self.models else "names no entry of 'models'",
            )
        for variant in self.ablations.variants:  # a bad variant fails here, before any work
            self.ablations.model(self, variant)

    def model(self, name: str) -> Model:
        if name not in self.models:
            raise ParamsError(f"params.yaml: no model '{name}' under 'models' (have: {', '.join(self.models)})")
        return self.models[name]


def flatten(section: object, prefix: str = "") -> dict[str, object]:
    """A section (or dict of them) as 'a.b.c' -> value, for MLflow."""
    value = section.asdict() if isinstance(section, Section) else section
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def validated(cls: type[Section], raw: object, key: str = ""):
    """`cls` from `raw`, or ParamsError naming the first bad key under `key` and what is allowed."""
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(worded(exc, cls, key)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run the stages from the project root, where params.yaml lives")
    with path.open() as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ParamsError(
                f"{path} is not valid YAML{where}: {problem}; fix that line (indentation, a missing colon or quote)"
            ) from None
    params = validated(Params, raw)
    params.check_references()
    params.label()
    start_tracing()
    return params


def load_or_exit(path: str | Path = "params.yaml") -> Params:
    """For stage entry points: a bad params.yaml ends the stage with its message and exit code 2."""
    try:
        return load_params(path)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def stage_args(stage: str, argv: list[str], optional: dict[str, str] | None = None, **choices) -> argparse.Namespace:
    """A stage's command line: one positional argument per keyword, in order, each one of its choices
    (e.g. the keys of params.yaml `models`), or a whole number where the choices are `int`; those
    `optional` names may be left out, for the default it gives. Anything else ends the stage with its
    usage and exit code 2."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}")
    for name, allowed in choices.items():
        default = (optional or {}).get(name)
        left_out = {"nargs": "?", "default": default} if default is not None else {}
        if allowed is int:
            parser.add_argument(name, type=int, metavar=name.upper(), help="a whole number", **left_out)
        else:
            words = ", ".join(allowed) + (f" (default: {default})" if default is not None else "")
            parser.add_argument(name, choices=list(allowed), metavar=name.upper(), help=words, **left_out)
    return parser.parse_args(argv)
