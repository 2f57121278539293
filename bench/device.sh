#!/bin/sh
# The device check, from a clone on a GPU machine: trains, evaluates and diagnoses with the
# pipeline's own code on the JAX backend (the whole default recipes), then trains and evaluates
# both models for 2 epochs on the PyTorch backend, and prints the tables with the CPU figures.
#
#   bench/device.sh                 # needs data/prepared/{mnist,cifar10}.{npz,json}
#   WHEELS=dir bench/device.sh      # first installs keras and its pure-Python needs from wheels in dir
#
# A GPU machine with JAX (CUDA) and PyTorch but no Keras needs keras, namex and optree, and pydantic
# for params.yaml (pydantic_core is built per platform):
#   pip download --no-deps --only-binary=:all: -d wheels keras==3.15.1 namex==0.1.0 optree==0.20.0 \
#       pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
# (add --python-version/--platform for the GPU machine's Python). Results: bench/results/device-*.json.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
KERAS_BACKEND=jax "$PYTHON" -m bench.device "$@"
if "$PYTHON" -c "import torch" 2>/dev/null; then
    KERAS_BACKEND=torch "$PYTHON" -m bench.device --epochs 2 --no-diagnose --no-determinism "$@"
fi
