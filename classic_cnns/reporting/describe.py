"""A model's configuration in words, for the report and the claims table."""

from __future__ import annotations

from classic_cnns.model.networks import DEFAULTS, TITLES


def title(name: str, cfg) -> str:
    """'LeNet-5', or 'LeNet-5 (lenet5-wide)' where the models entry is not named after its architecture."""
    arch = TITLES[cfg.architecture]
    return arch if name == cfg.architecture else f"{arch} ({name})"


def choices(cfg) -> dict:
    """The architecture's activation, pooling, dropout and first kernel, as built."""
    return {k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in DEFAULTS[cfg.architecture].items()}


def recipe(cfg) -> str:
    parts = [
        f"{cfg.optimizer}"
        + (f" (momentum {cfg.momentum:g}{', Nesterov' if cfg.nesterov else ''})" if cfg.optimizer == "sgd" else ""),
        f"lr {cfg.learning_rate:g} {cfg.schedule}"
        + (f" after {cfg.warmup_epochs} warm-up epoch{'s' * (cfg.warmup_epochs > 1)}" if cfg.warmup_epochs else ""),
        f"batch {cfg.batch_size}",
        f"inputs {cfg.input_scaling}",
    ]
    if cfg.mixed_precision == "auto":
        parts.append("mixed bfloat16 where it trains faster (auto)")
    elif cfg.mixed_precision:
        parts.append("mixed bfloat16")
    return "; ".join(parts)


def additions(cfg) -> str:
    extra = (["batch normalisation"] if cfg.batch_norm else []) + (
        [f"{cfg.kernel_initializer} initialisation"] if cfg.kernel_initializer != "glorot_uniform" else []
    )
    return ", ".join(extra) or "none (the notebook's layers)"


def regularisation(cfg) -> str:
    parts = []
    if choices(cfg)["dropout"]:
        parts.append(f"dropout {choices(cfg)['dropout']:g}")
    if cfg.weight_decay:
        parts.append(f"weight decay {cfg.weight_decay:g}")
    if cfg.label_smoothing:
        parts.append(f"label smoothing {cfg.label_smoothing:g}")
    augmentation = (
        ([f"crop, pad {cfg.augment_crop_padding}"] if cfg.augment_crop_padding else [])
        + (["flip"] if cfg.augment_flip else [])
        + ([f"cutout {cfg.augment_cutout}x{cfg.augment_cutout}"] if cfg.augment_cutout else [])
    )
    if augmentation:
        parts.append("augmentation (" + ", ".join(augmentation) + ")")
    if cfg.early_stopping_patience:
        parts.append(f"early stopping (patience {cfg.early_stopping_patience})")
    return ", ".join(parts) or "none"


def test_accuracy(metrics: dict) -> str:
    text = f"{100 * metrics['test_accuracy']:.2f}% (of {metrics['test_images']:,} images)"
    views = metrics.get("test_views", 1)
    if views > 1:
        text += (
            f"; averaged over {views} views of each image (test-time augmentation), "
            f"single view {100 * metrics['test_accuracy_single_view']:.2f}%"
        )
    return text


def peak_memory(training: dict, evaluation: dict) -> str:
    train, infer = training.get("peak_rss_mb"), evaluation.get("inference_peak_rss_mb")
    text = (
        (f"training {train:,.0f} MB" if train else "training: not recorded")
        + "; "
        + (f"inference {infer:,.0f} MB" if infer else "inference: not recorded")
    )
    gpu = training.get("peak_gpu_mb")
    return text + (f"; GPU {gpu:,.0f} MB" if gpu else "")
