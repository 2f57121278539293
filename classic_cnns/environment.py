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


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def gpu_has_bfloat16() -> bool:
    """The first GPU the backend sees computes bfloat16 in hardware (NVIDIA compute capability 8.0+)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") if gpus else None
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        capability = tuple(map(int, str(gpus[0].compute_capability).split("."))) if gpus else None
    elif backend == "torch":
        import torch

        capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    else:
        capability = None
    return bool(capability) and tuple(capability) >= (8, 0)


def bfloat16_pays() -> tuple[bool, str]:
    """Whether mixed bfloat16 trains faster than float32 here, and why, from what `bench.speed` measured
    (AlexNet's recipe in both precisions, one run each, docs/measurements.md): an Intel CPU with AMX
    1.97x, an AMD EPYC with AVX-512 BF16 1.44x, an AVX2-only CPU (bfloat16 emulated) about 20x slower;
    an NVIDIA GPU gains where it has bfloat16 units (compute capability 8.0+)."""
    if accelerators():
        if gpu_has_bfloat16():
            return True, "the GPU computes bfloat16 in hardware"
        return False, "the GPU lacks bfloat16 units (compute capability below 8.0)"
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return True, "the CPU has AMX (bfloat16 measured 1.97x float32)"
    if "avx512_bf16" in flags:
        return True, "the CPU has AVX-512 BF16 (bfloat16 measured 1.44x float32)"
    return False, "the CPU has no native bfloat16 (emulated: measured about 20x slower)"


def compute_precision(setting: bool | str) -> tuple[str, str]:
    """('bfloat16' or 'float32', why) for a model's `mixed_precision` (true, false or auto)."""
    if setting == "auto":
        pays, why = bfloat16_pays()
        return ("bfloat16" if pays else "float32"), f"auto: {why}"
    return ("bfloat16" if setting else "float32"), "set in params.yaml"


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
