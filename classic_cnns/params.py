"""params.yaml -> one validated, typed Params object. Every stage reads its knobs from here.

Unknown keys, missing keys, wrong types and out-of-range values fail before any work is done,
naming the key and what is allowed.

Each stage declares in dvc.yaml exactly the params it reads; classic_cnns/paramtrace.py records
what a stage reads, so that the tests can compare it with dvc.lock.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from classic_cnns.paramtrace import TRACE_ENV, Section, record as _record, start_tracing  # noqa: F401

ARCHITECTURES = ("lenet5", "alexnet")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
INITIALIZERS = ("glorot_uniform", "he_normal", "he_uniform")
INPUT_SCALINGS = ("standardize", "unit", "none")
ACTIVATIONS = ("tanh", "relu")
POOLINGS = ("average", "max")


class ParamsError(ValueError):
    """params.yaml is not valid; the message names the key and the fix."""


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ParamsError(f"params.yaml: '{key}' {msg}")


@dataclass(frozen=True)
class DataSource(Section):
    """One dataset. `source`: 'official' downloads the published files of a dataset the registry
    knows (classic_cnns/data/datasets.py); anything else is the path (relative to the project) or
    http(s) URL of an .npz laid out like keras.datasets.<name>.load_data(). A dataset the registry
    does not know declares what it holds: title, class names, image shape (and a zero border)."""
    source: str = "official"
    title: str | None = None  # as reports and MLflow name it; default: the registry's
    classes: list[str] | None = None  # class names, in label order
    image_shape: list[int] | None = None  # [height, width, channels] of the images as stored
    pad: int | None = field(default=None, metadata={"min": 0, "max": 64})  # zero border added on each side


@dataclass(frozen=True)
class Prepare(Section):
    val_size: int = field(default=5000, metadata={"min": 1})
    train_limit: int = field(default=0, metadata={"min": 0})  # 0 = the whole training split
    test_limit: int = field(default=0, metadata={"min": 0})  # 0 = the whole test set


@dataclass(frozen=True)
class Model(Section):
    architecture: str = field(metadata={"choices": ARCHITECTURES})
    dataset: str  # an entry of `data`
    # Optimisation
    optimizer: str = field(default="adam", metadata={"choices": OPTIMIZERS})
    learning_rate: float = field(default=1e-3, metadata={"min": 1e-8, "max": 10.0})  # peak rate
    momentum: float = field(default=0.0, metadata={"min": 0.0, "max": 0.999})  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})  # decoupled
    schedule: str = field(default="constant", metadata={"choices": SCHEDULES})
    warmup_epochs: int = field(default=0, metadata={"min": 0, "max": 1000})  # linear warm-up
    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 0.5})
    batch_size: int = field(default=64, metadata={"min": 1, "max": 65536})
    epochs: int = field(default=5, metadata={"min": 1, "max": 10000})
    early_stopping_patience: int = field(default=0, metadata={"min": 0})  # 0 = off
    # Augmentation (training images only): random crop after zero-padding, horizontal flip,
    # cutout (one square per image set to the mean pixel)
    augment_crop_padding: int = field(default=0, metadata={"min": 0, "max": 16})
    augment_flip: bool = False
    augment_cutout: int = field(default=0, metadata={"min": 0, "max": 64})  # square side, 0 = off
    # Inputs: standardize = (x - mean) / std per channel from the training split; unit = x / 255
    # (the reference notebook's); none = raw 0..255 pixels
    input_scaling: str = field(default="standardize", metadata={"choices": INPUT_SCALINGS})
    # Additions to the architecture, off by default and named in the report when on
    batch_norm: bool = False
    kernel_initializer: str = field(default="glorot_uniform", metadata={"choices": INITIALIZERS})
    # The architecture's own choices; null (or left out) = as in the notebook (LeNet-5: tanh,
    # average pooling, no dropout, 5x5 first kernel; AlexNet: relu, max, 0.5, 11x11)
    activation: str | None = field(default=None, metadata={"choices": ACTIVATIONS})
    pooling: str | None = field(default=None, metadata={"choices": POOLINGS})
    dropout: float | None = field(default=None, metadata={"min": 0.0, "max": 0.95})  # after hidden dense layers
    first_kernel: int | None = field(default=None, metadata={"min": 1, "max": 31})
    # Speed
    steps_per_execution: int = field(default=1, metadata={"min": 1, "max": 10000})
    mixed_precision: bool = False  # bfloat16 compute, float32 weights and output
    # Data-parallel training (JAX backend): 1, N or "all" devices; batch_size stays the global batch
    devices: int | str = field(default=1, metadata={"min": 1, "or": "all"})


@dataclass(frozen=True)
class Health(Section):
    """A run whose training loss stays within loss_margin of ln(classes) with accuracy within
    accuracy_margin of chance after check_after_epochs epochs did not learn; it is stopped."""
    check_after_epochs: int = field(default=2, metadata={"min": 1})
    loss_margin: float = field(default=0.05, metadata={"min": 0.0, "max": 1.0})
    accuracy_margin: float = field(default=0.05, metadata={"min": 0.0, "max": 1.0})


@dataclass(frozen=True)
class NotebookRecipe(Section):
    """The reference notebook's training settings; everything else as Model's defaults."""
    optimizer: str = field(default="adam", metadata={"choices": OPTIMIZERS})
    learning_rate: float = field(default=1e-3, metadata={"min": 1e-8, "max": 10.0})
    batch_size: int = field(default=64, metadata={"min": 1, "max": 65536})
    input_scaling: str = field(default="unit", metadata={"choices": INPUT_SCALINGS})


@dataclass(frozen=True)
class Diagnose(Section):
    """Replays the first `steps` training steps of `model` with its own recipe and with the
    notebook's, measuring every `every` steps on `probe_images` validation images."""
    model: str = "alexnet"
    steps: int = field(default=400, metadata={"min": 1})
    every: int = field(default=25, metadata={"min": 1})
    probe_images: int = field(default=256, metadata={"min": 1})
    notebook: NotebookRecipe = field(default_factory=NotebookRecipe)


@dataclass(frozen=True)
class Budget(Section):
    """What each cell of the grid trains on: epochs, and training/validation/test images (0 = all)."""
    epochs: int = field(default=30, metadata={"min": 1, "max": 10000})
    train_limit: int = field(default=0, metadata={"min": 0})
    val_limit: int = field(default=0, metadata={"min": 0})
    test_limit: int = field(default=0, metadata={"min": 0})


@dataclass(frozen=True)
class Ablations(Section):
    """The claims grid (ablations/dvc.yaml): each variant is a models entry (`base`) with some
    knobs changed, trained once per seed at this budget (epochs, training/validation/test images)
    and scored on single test views."""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"min": 0, "unique": True})
    epochs: int = field(default=8, metadata={"min": 1, "max": 10000})
    train_limit: int = field(default=7000, metadata={"min": 0})  # 0 = the whole training split
    val_limit: int = field(default=2000, metadata={"min": 0})  # 0 = the whole validation split
    test_limit: int = field(default=0, metadata={"min": 0})  # 0 = the whole test set
    variants: dict[str, dict] = field(default_factory=dict)
    # the same grid at full size, for a GPU (bench/device.py --grid): results in ablations/results-full/
    full_size: Budget = field(default_factory=Budget)

    def changes(self, variant: str) -> dict:
        """The variant's entry as written: its base and the knobs it changes."""
        key = f"ablations.variants.{variant}"
        _check(variant in self.variants, key, f"is not a variant (have: {', '.join(self.variants)})")
        for knob in self.variants[variant]:
            _record(f"{key}.{knob}")
        return dict(self.variants[variant])

    def model(self, params: "Params", variant: str, size: str = "quick") -> Model:
        """The variant's full, validated recipe: its base model's, its changes, the epochs of the
        budget `size` names (quick: this section's; full: full_size's)."""
        key = f"ablations.variants.{variant}"
        changes = self.changes(variant)
        base = changes.pop("base", None)
        _check("epochs" not in changes, f"{key}.epochs", "is set by the grid's budget; remove it here")
        _check(base in params.models, f"{key}.base", f"must name an entry of 'models' ({', '.join(params.models)})")
        epochs = self.full_size.epochs if size == "full" else self.epochs
        raw = {**dataclasses.asdict(params.models[base]), **changes, "epochs": epochs}
        return _build(Model, raw, key, trace=False)


@dataclass(frozen=True)
class Evaluate(Section):
    batch_size: int = field(default=512, metadata={"min": 1, "max": 65536})
    # Per model: average the test predictions over the centre, four shifted corners and (if
    # training flipped) their mirrors, as AlexNet did. Evaluation only: training is unchanged.
    test_time_augmentation: dict[str, bool] = field(default_factory=dict)

    def tta(self, model: str) -> bool:
        _record(f"evaluate.test_time_augmentation.{model}")
        return self.test_time_augmentation[model]


@dataclass(frozen=True)
class Mlflow(Section):
    experiment: str = "classic-cnns"


@dataclass(frozen=True)
class Params(Section):
    seed: int = field(metadata={"min": 0, "max": 2**31 - 1})
    data: dict[str, DataSource]
    prepare: Prepare
    models: dict[str, Model]
    health: Health
    diagnose: Diagnose
    evaluate: Evaluate
    mlflow: Mlflow
    ablations: Ablations = field(default_factory=Ablations)

    def __post_init__(self):
        from classic_cnns.data import datasets

        for name, source in self.data.items():
            try:
                datasets.get(name, source)  # a dataset the registry lacks must declare its layout
            except datasets.DatasetError as exc:
                raise ParamsError(str(exc)) from None
        for name, cfg in self.models.items():
            _check(cfg.dataset in self.data, f"models.{name}.dataset",
                   f"must name an entry of 'data' ({', '.join(self.data)}); got {cfg.dataset!r}")
        tta = self.evaluate.test_time_augmentation
        for name in set(self.models) ^ set(tta):
            _check(False, f"evaluate.test_time_augmentation.{name}",
                   "is missing: add true or false for each model" if name in self.models
                   else "names no entry of 'models'")
        for variant in self.ablations.variants:  # a bad variant fails here, before any work
            self.ablations.model(self, variant)

    def model(self, name: str) -> Model:
        if name not in self.models:
            raise ParamsError(f"params.yaml: no model '{name}' under 'models' (have: {', '.join(self.models)})")
        return self.models[name]



def flatten(section: object, prefix: str = "") -> dict[str, object]:
    """A section (or dict of them) as 'a.b.c' -> value, for MLflow."""
    value = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, object] = {}
    for k, v in value.items():
        if not k.startswith("_"):
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def _build(cls: type, raw: object, key: str, trace: bool = True):
    """Build dataclass `cls` from `raw`, checking names, types and ranges recursively. With
    `trace`, the section remembers its key, so that reading its knobs is recorded."""
    _check(isinstance(raw, dict), key or "<top level>", f"must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        _check(name in fields, f"{key}.{name}".lstrip("."),
               f"is not a known key; allowed here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{key}.{name}".lstrip(".")
        if name not in raw:
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            _check(has_default, path, "is missing; add it to params.yaml")
            continue
        kwargs[name] = _value(hints[name], raw[name], path, f.metadata)
    section = cls(**kwargs)
    if trace:
        object.__setattr__(section, "_key", key)
    return section


def _value(hint, value, path: str, meta):
    if "or" in meta:  # a whole number or one word, e.g. devices: all
        if value == meta["or"]:
            return value
        _check(isinstance(value, int) and not isinstance(value, bool), path,
               f"must be a whole number or {meta['or']!r}, got {value!r}")
        hint = int
    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]: null means "the default"
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if typing.get_origin(hint) is dict:
        _, item_type = typing.get_args(hint)
        _check(isinstance(value, dict) and value, path, "must be a non-empty mapping of name -> settings")
        if item_type is dict:  # checked where it is used (e.g. Ablations.model)
            bad = [k for k, v in value.items() if not isinstance(v, dict)]
            _check(not bad, f"{path}.{bad[0] if bad else ''}", "must be a mapping of knob -> value")
            return {str(k): dict(v) for k, v in value.items()}
        if dataclasses.is_dataclass(item_type):
            return {str(k): _build(item_type, v, f"{path}.{k}") for k, v in value.items()}
        return {str(k): _value(item_type, v, f"{path}.{k}", {}) for k, v in value.items()}
    if typing.get_origin(hint) is list:
        (item_type,) = typing.get_args(hint)
        _check(isinstance(value, list) and value, path, "must be a non-empty list")
        _check(not meta.get("unique") or len(set(map(repr, value))) == len(value), path, "must not repeat a value")
        return [_value(item_type, v, f"{path}[{i}]", meta) for i, v in enumerate(value)]
    if hint is bool:
        _check(isinstance(value, bool), path, f"must be true or false, got {value!r}")
    elif hint is float:
        hint = ""
        if isinstance(value, str):
            try:
                hint = f" (YAML reads {value} as text: write it with a dot, e.g. {float(value)!r})" if float(value) else ""
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), path,
               f"must be a number, got {value!r}{hint}")
        value = float(value)
    elif hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), path,
               f"must be a whole number, got {value!r}")
    elif hint is str:
        _check(isinstance(value, str) and value != "", path, f"must be a non-empty string, got {value!r}")
    if "choices" in meta:
        _check(value in meta["choices"], path, f"must be one of {', '.join(meta['choices'])}; got {value!r}")
    if "min" in meta:
        _check(value >= meta["min"], path, f"must be >= {meta['min']}, got {value!r}")
    if "max" in meta:
        _check(value <= meta["max"], path, f"must be <= {meta['max']}, got {value!r}")
    return value


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run the stages from the project root, where params.yaml lives")
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    params = _build(Params, raw, "")
    start_tracing()
    return params


def load_or_exit(path: str | Path = "params.yaml") -> Params:
    """For stage entry points: a bad params.yaml ends the stage with its message and exit code 2."""
    try:
        return load_params(path)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def stage_args(stage: str, argv: list[str], **choices) -> argparse.Namespace:
    """A stage's command line: one positional argument per keyword, in order, each one of its choices
    (e.g. the keys of params.yaml `models`), or a whole number where the choices are `int`. Anything
    else ends the stage with its usage and exit code 2."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}")
    for name, allowed in choices.items():
        if allowed is int:
            parser.add_argument(name, type=int, metavar=name.upper(), help="a whole number")
        else:
            parser.add_argument(name, choices=list(allowed), metavar=name.upper(), help=", ".join(allowed))
    return parser.parse_args(argv)
