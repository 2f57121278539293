#!/usr/bin/env bash
# The wheels bench/gpu_repro.sh installs on a GPU machine that reaches no package index: what
# requirements.txt pins for the pipeline on JAX (Keras, DVC, MLflow, pydantic, Dask and their needs),
# for that machine's Python, less what its image already holds (bench/gpu_image.txt).
#
#   bench/gpu_wheels.sh .whl            # Python 3.12 (the lent H200's), manylinux x86-64
#   PY=3.11 bench/gpu_wheels.sh .whl311  # another Python, e.g. to try the script on this machine
#
# antlr4-python3-runtime (DVC's hydra needs it) has only a source archive on PyPI: it is built here
# into a pure-Python wheel first.
set -euo pipefail
dir=${1:?usage: bench/gpu_wheels.sh <folder>}
cd "$(dirname "$0")/.."
PY=${PY:-3.12}
PYTHON=${PYTHON:-python3}
mkdir -p "$dir"
"$PYTHON" -m pip wheel -q --no-deps -w "$dir" "$(grep '^antlr4-python3-runtime==' constraints.txt)"
pins=$(grep -E '^(keras|dvc|mlflow\[auth\]|pydantic|markdown-it-py|urllib3|filelock|PyYAML|dask|distributed)==' requirements.txt | cut -d' ' -f1)
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q --only-binary=:all: --python-version "$PY" --implementation cp "${platforms[@]}" \
    --find-links "$dir" -c constraints.txt -d "$dir" $pins
"$PYTHON" - "$dir" bench/gpu_image.txt <<'PY'
import re, sys
from pathlib import Path

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

folder, image = Path(sys.argv[1]), {norm(l.strip()) for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")}
kept = 0
for wheel in sorted(folder.glob("*.whl")):
    if norm(wheel.name.split("-")[0]) in image:
        wheel.unlink()
    else:
        kept += wheel.stat().st_size
print(f"{folder}: {len(list(folder.glob('*.whl')))} wheels, {kept / 2**20:.1f} MiB to carry")
PY
