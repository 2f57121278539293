"""The library behind the pipeline's stages (stages/), one module per concept:

params (params.yaml -> validated Params), datasets (the registry), formats (file readers),
download, data (prepared splits), models (the architectures), recipe (optimizer, schedule,
compiled model), backend (what differs between Keras backends), augment and tta (training and test-time views), loop (the one training loop),
health (training checks), checkpoint, evaluation (metrics), tracking (MLflow), environment,
diagnostics, grid and claims (the claims grid), report, questions, architectures, describe,
figures and render (the reports).
"""
import os

from classic_cnns import framework_logs
from classic_cnns.backend import set_determinism_env

# TensorFlow's C++ start-up chatter (CPU feature notes, a harmless op-attribute mismatch printed
# as an error per dataset) drowns the stages' own progress lines; set it to 0 to see everything.
# Lines logged while TensorFlow loads, which that setting does not reach on CPUs where oneDNN is
# on (AVX-512, AMX), are filtered by the same level (classic_cnns/framework_logs.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
framework_logs.install()

# Deterministic kernels: flags each backend reads once, when it starts (classic_cnns/backend.py).
set_determinism_env()
