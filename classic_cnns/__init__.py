"""The library behind the pipeline's stages (stages/), one subpackage per part of the pipeline:

- data: the dataset registry, the published file formats, downloading, the prepared splits;
- model: the networks (LeNet-5, AlexNet) and the recipe that compiles them;
- training: one way to run a training (session), its loop, augmentation, checkpoints, health checks,
  devices, and what a training leaves (results);
- evaluation: scores, test-time views, and what an evaluation leaves;
- tracking: MLflow's store, a run's life, per-epoch logging, the model registry;
- analysis: the diagnosis of the notebook's AlexNet, the claims grid and its statistics;
- reporting: the report's content, prose, figures and rendering.

At the top: params (params.yaml -> validated Params) and paramtrace, paths (every file location),
errors, outputs (atomic writes), costs, backend (what differs between Keras backends), environment,
framework_logs and verify.
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
