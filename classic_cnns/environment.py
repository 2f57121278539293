"""What a run ran on: package versions, Python, CPU model and the accelerator the backend sees."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "jax", "torch", "mlflow", "dvc", "numpy", "pandas")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accelerators() -> list[str]:
    """GPU names the active Keras backend can use (empty on CPU)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def device() -> str:
    gpus = accelerators()
    if gpus:
        return f"GPU: {gpus[0]}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
    import os

    return f"CPU: {cpu_model()} ({os.cpu_count()} cores)"


def describe() -> dict[str, str]:
    """Flat string record for MLflow tags and reports."""
    import keras

    env = {f"version.{k}": v for k, v in package_versions().items()}
    env.update(
        {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "device": device(),
            "keras_backend": keras.backend.backend(),
        }
    )
    from classic_cnns.backend import determinism

    env.update(determinism())
    return env


def peak_memory_mb() -> dict[str, float]:
    """Peak memory of this process so far: resident set size (whole process: data, model,
    framework) and, on a GPU, the backend allocator's peak."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak = {"peak_rss_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    import keras

    backend = keras.backend.backend()
    if not accelerators():
        return peak
    if backend == "tensorflow":
        import tensorflow as tf

        peak["peak_gpu_mb"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
    elif backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peak["peak_gpu_mb"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
    elif backend == "torch":
        import torch

        peak["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak
