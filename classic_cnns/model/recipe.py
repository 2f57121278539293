"""A training recipe made real: seeds, the optimizer, the learning-rate schedule, the compiled model.

Everything here is a function of a `models.<name>` entry (params.Model), so that the train stage,
the claims grid, the diagnosis and the benchmarks build the same model the same way.
"""

from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Same seed, same machine -> same weights: seeded RNGs and deterministic kernels."""
    import keras

    from classic_cnns.backend import make_deterministic

    keras.utils.set_random_seed(seed)
    make_deterministic()


def learning_rate(cfg, steps_per_epoch: int):
    """A float, or a schedule of the optimizer's step: linear warm-up, then constant or cosine."""
    import keras

    if cfg.schedule == "constant" and cfg.warmup_epochs == 0:
        return cfg.learning_rate
    warmup = cfg.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.learning_rate,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
        decay_steps=max(1, cfg.epochs * steps_per_epoch - warmup),
        alpha=1.0 if cfg.schedule == "constant" else 0.0,
    )


def make_optimizer(cfg, steps_per_epoch: int):
    import keras

    lr = learning_rate(cfg, steps_per_epoch)
    decay = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=decay)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(lr, weight_decay=decay)


def input_stats(cfg, meta: dict) -> tuple[list[float], list[float]]:
    """(mean, std) the model's first layer normalises pixels with."""
    channels = len(meta["mean"])
    if cfg.input_scaling == "standardize":
        return meta["mean"], meta["std"]
    return [0.0] * channels, [255.0 if cfg.input_scaling == "unit" else 1.0] * channels


def build_compiled(cfg, meta: dict, steps_per_epoch: int):
    """The model of `cfg` for the data `meta` describes, compiled with its optimizer, schedule and loss."""
    import keras

    from classic_cnns.backend import steps_per_execution
    from classic_cnns.environment import compute_precision
    from classic_cnns.model.networks import build

    precision, _ = compute_precision(cfg.mixed_precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    mean, std = input_stats(cfg, meta)
    model = build(
        cfg.architecture,
        tuple(meta["shape"]),
        mean,
        std,
        len(meta["classes"]),
        batch_norm=cfg.batch_norm,
        kernel_initializer=cfg.kernel_initializer,
        activation=cfg.activation,
        pooling=cfg.pooling,
        dropout=cfg.dropout,
        first_kernel=cfg.first_kernel,
    )
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(cfg.steps_per_execution),
    )
    return model
