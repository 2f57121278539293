"""What differs between Keras backends (TensorFlow, JAX, PyTorch), in one place.

The backend is Keras's own choice: `KERAS_BACKEND=jax dvc repro` (default: tensorflow). Each
stage records it, with the determinism settings below, in MLflow (classic_cnns/environment.py).

- Determinism: TensorFlow's op determinism, XLA's deterministic GPU ops (JAX), PyTorch's
  deterministic algorithms and cuBLAS workspace. The environment variables must be set before
  the backend starts, so `classic_cnns/__init__.py` calls `set_determinism_env()` on import.
- `steps_per_execution`: Keras supports only 1 on PyTorch; a larger value is lowered with a note.
- Gradients (diagnose's gradient norms): each backend's own autodiff.
"""

from __future__ import annotations

import os

XLA_DETERMINISM = "--xla_gpu_deterministic_ops=true"
CUBLAS_WORKSPACE = ":4096:8"  # PyTorch's deterministic cuBLAS needs a fixed workspace


BACKENDS = {  # KERAS_BACKEND -> (the module it imports, how to install it)
    "tensorflow": ("tensorflow", "pip install -r requirements.txt"),
    "jax": ("jax", "pip install -r requirements.txt (CPU), then requirements-gpu.txt on an NVIDIA GPU"),
    "torch": ("torch", "pip install torch"),
}


def requested_problem() -> str | None:
    """What is wrong with KERAS_BACKEND (unknown, or its package missing), in one line; None if fine.
    Checked by every stage before `import keras`, which would fail in a 40-line traceback."""
    import importlib.util

    wanted = os.environ.get("KERAS_BACKEND", "").strip()
    if not wanted:
        return None
    allowed = ", ".join(BACKENDS)
    if wanted not in BACKENDS:
        return f"KERAS_BACKEND={wanted} is not a backend this project runs on: use one of {allowed}, or unset it"
    module, install = BACKENDS[wanted]
    if importlib.util.find_spec(module) is None:
        return f"KERAS_BACKEND={wanted} needs the {module} package, not installed here: {install} (or use {allowed})"
    return None


def name() -> str:
    import keras

    return keras.backend.backend()


def set_determinism_env() -> None:
    """Environment flags that each backend reads when it starts (harmless for the others)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISM}".strip()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def make_deterministic() -> None:
    """Deterministic kernels in the running backend (after seeding)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)  # a kernel without a deterministic version warns
        torch.backends.cudnn.benchmark = False


def determinism() -> dict[str, str]:
    """The determinism settings in force, for the run's tags."""
    backend = name()
    if backend == "jax":
        return {"determinism": os.environ.get("XLA_FLAGS", "")}
    if backend == "torch":
        return {
            "determinism": f"torch.use_deterministic_algorithms(warn_only); CUBLAS_WORKSPACE_CONFIG="
            f"{os.environ.get('CUBLAS_WORKSPACE_CONFIG', '')}"
        }
    return {"determinism": "tf.config.experimental.enable_op_determinism"}


_noted: set[str] = set()


def steps_per_execution(asked: int) -> int:
    """`asked`, or what the backend supports (printing why, once)."""
    if name() == "torch" and asked > 1:
        if "spe" not in _noted:
            print(
                f"note: steps_per_execution {asked} -> 1: Keras's PyTorch backend runs one batch per call", flush=True
            )
            _noted.add("spe")
        return 1
    return asked


def kernel_gradient_norms(model, x, y) -> dict[str, float]:
    """L2 norm of the loss gradient (model.compute_loss, inference mode) for each layer's kernel."""
    import keras
    import numpy as np

    kernels = {layer.name: layer.kernel for layer in model.layers if hasattr(layer, "kernel")}
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False))
        grads = tape.gradient(loss, [k.value for k in kernels.values()])
        return {
            layer: float(tf.norm(tf.cast(g, tf.float32))) if g is not None else 0.0
            for layer, g in zip(kernels, grads, strict=False)
        }
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]
        metrics = [v.value for v in model.metrics_variables]

        def loss(values):
            return model.compute_loss_and_updates(values, fixed, metrics, x, y, None, training=False)[0]

        by_path = dict(zip((v.path for v in model.trainable_variables), jax.grad(loss)(trainable), strict=False))
        grads = [by_path.get(k.path) for k in kernels.values()]
    elif backend == "torch":
        import torch

        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False))
        grads = torch.autograd.grad(loss, [k.value for k in kernels.values()], allow_unused=True)
        grads = [None if g is None else g.detach().cpu().float() for g in grads]
    else:
        return {}
    return {
        layer: float(np.linalg.norm(keras.ops.convert_to_numpy(keras.ops.cast(g, "float32")))) if g is not None else 0.0
        for layer, g in zip(kernels, grads, strict=False)
    }
