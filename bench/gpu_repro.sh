#!/usr/bin/env bash
# The real pipeline on a GPU machine that has JAX but no DVC, MLflow or Keras: installs them from
# carried wheels, runs `dvc repro` on the JAX backend with MLflow tracking (the project's mlflow.db
# unless MLFLOW_TRACKING_URI says otherwise), optionally the claims grid, and leaves in $OUT what a
# teammate commits: the lock files, reports/, the grid's results, the MLflow store, a log and the
# wall time of each stage. Run from the project's root (a copy: it may edit params.yaml there).
#
#   WHEELS=.whl MNIST_MIRROR=<folder> CIFAR10_COPY=data/external/cifar10-jpeg.npz OUT=<folder> bench/gpu_repro.sh
#
#   WHEELS         wheels to install first into $SITE (default: site/ in the temporary folder; skipped when there):
#                  bench/gpu_wheels.sh makes them for the GPU machine's Python
#   MNIST_MIRROR   DATA_MIRROR for the download stage (a folder with the four official MNIST files)
#   CIFAR10_COPY   a local CIFAR-10 .npz (relative to the project) used instead of the official archive;
#                  CIFAR10_TITLE names it (default: CIFAR-10 JPEG stand-in)
#   GRID           1: then `dvc repro ablations/dvc.yaml` (the claims grid's quick check)
#   STAGES         what the first `dvc repro` runs (default: everything; e.g. "prepare@mnist prepare@cifar10")
#   FULL_GRID      1: then `dvc repro ablations/full-size/dvc.yaml` (the grid at full size, one cell after another)
#   GRID_WORKERS   N: then the grid at full size on N Dask workers sharing the GPU (python -m classic_cnns.dispatch
#                  --workers N, each with 1/N of its memory), through a DVC remote in the temporary folder and a
#                  commit of the inputs (git needed); GRID_CELLS narrows it to some cells (stage addresses)
#   OUT            where the results go (required)
#
# On the lent H200 (no package index; each call carries at most 64 MiB and lays the tree anew, while
# the temporary folder, $T below, stays as long as the machine is warm), prepared here with bench/gpu_wheels.sh .whl and
# `mkdir -p .chunks && split -b 55M data/external/cifar10-jpeg.npz .chunks/c10.` (git-ignored; 3 chunks for the 170 MB stand-in):
#   call 1, carry .whl:              python3 -m pip install -q --no-index --no-deps --target "$T/site" .whl/*.whl && touch "$T/site/.installed"
#   calls 2-4, carry .chunks/c10.a?: cp .chunks/* "$T"/         (one chunk a call, back to back)
#   call 5, carry data/raw/mnist:    mkdir -p data/external "$T/mnist" && cp data/raw/mnist/*.gz "$T/mnist/" &&
#       cat "$T"/c10.* > data/external/cifar10-jpeg.npz &&
#       OUT=$OUT MNIST_MIRROR="$T/mnist" CIFAR10_COPY=data/external/cifar10-jpeg.npz bench/gpu_repro.sh
#   (not the mirror in data/raw/mnist: DVC deletes a stage's outputs before it runs it)
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
[ -f dvc.yaml ] || { echo "gpu_repro.sh: run it from the project's root (no dvc.yaml here)" >&2; exit 1; }
PYTHON=${PYTHON:-python3}
SITE=${SITE:-$(dirname "$(mktemp -u)")/site}  # in the temporary folder, which outlives a call
mkdir -p "$OUT"
started=$(date +%s)

if [ -n "${WHEELS:-}" ] && [ ! -f "$SITE/.installed" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
    touch "$SITE/.installed"
fi
if [ -f "$SITE/.installed" ]; then  # what this script (or call 1 below) installed, nothing older
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
fi
shim=$(mktemp -d)  # dvc.yaml's commands call `python`: this one (a venv's too: no symlink), whatever its name
printf '#!/bin/sh\nexec "%s" "$@"\n' "$(command -v "$PYTHON")" > "$shim/python" && chmod +x "$shim/python"
export PATH="$shim:$PATH" KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
"$PYTHON" -c "import dvc, mlflow, keras, pydantic" || { echo "gpu_repro.sh: DVC, MLflow, Keras or pydantic missing: set WHEELS" >&2; exit 1; }

if [ ! -d .git ]; then  # a copy sent without its repository: a snapshot, or DVC without git
    if command -v git >/dev/null; then
        git init -q && git add -A && git -c user.name=gpu -c user.email=gpu@localhost commit -qm "snapshot" >/dev/null
    else
        "$PYTHON" -m dvc config --local core.no_scm true
    fi
fi
if [ -n "${CIFAR10_COPY:-}" ]; then
    "$PYTHON" - "$CIFAR10_COPY" "${CIFAR10_TITLE:-CIFAR-10 JPEG stand-in}" <<'PY'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["data"]["cifar10"] = {"source": sys.argv[1], "title": sys.argv[2]}
open("params.yaml", "w").write(yaml.safe_dump(params, sort_keys=False))
PY
fi
[ -z "${MNIST_MIRROR:-}" ] || export DATA_MIRROR=$MNIST_MIRROR

{
    "$PYTHON" -c "from classic_cnns.environment import describe; import json; print(json.dumps(describe()))"
    # shellcheck disable=SC2086
    "$PYTHON" -m dvc repro ${STAGES:-} 2>&1 | "$PYTHON" -m bench.timeline "$OUT/timeline.json"
    if [ "${GRID:-0}" = 1 ]; then
        "$PYTHON" -m dvc repro ablations/dvc.yaml 2>&1 | "$PYTHON" -m bench.timeline "$OUT/timeline-grid.json"
    fi
    if [ "${FULL_GRID:-0}" = 1 ]; then
        "$PYTHON" -m dvc repro ablations/full-size/dvc.yaml 2>&1 | "$PYTHON" -m bench.timeline "$OUT/timeline-full-grid.json"
    fi
    if [ "${GRID_WORKERS:-0}" -gt 0 ]; then  # the workers clone this commit and pull its inputs from the remote
        "$PYTHON" -m dvc remote add -f -d device "$(dirname "$(mktemp -u)")/dvc-remote"
        "$PYTHON" -m dvc push -q
        git add -A && git -c user.name=gpu -c user.email=gpu@localhost commit -qm "the grid's inputs" >/dev/null
        # shellcheck disable=SC2086
        time "$PYTHON" -m classic_cnns.dispatch ${GRID_CELLS:-ablations/full-size/dvc.yaml} --workers "$GRID_WORKERS"
    fi
    "$PYTHON" -m dvc status
} 2>&1 | tee "$OUT/repro.log"

files=()  # mlflow.db: the runs, params, metrics and tags (artifacts stay in mlruns/: the models are too big)
for f in dvc.lock params.yaml reports ablations/dvc.lock ablations/results ablations/claims.json \
    ablations/full-size/dvc.lock ablations/results-full mlflow.db; do
    [ -e "$f" ] && files+=("$f")
done
tar -czf "$OUT/results.tar.gz" "${files[@]}"
echo "gpu_repro.sh: $(( $(date +%s) - started )) s in all; results in $OUT (results.tar.gz, repro.log, timeline*.json)"
