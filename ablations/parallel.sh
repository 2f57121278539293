#!/usr/bin/env bash
# The claims grid with N cells running at a time: `ablations/parallel.sh N [dvc repro options]`.
# Each cell is its own `dvc repro` of its own stage, and DVC itself serialises what must be
# (`--wait-for-lock`: the repo lock while a stage starts and records its results), so dvc.lock,
# the DVC cache and MLflow end up as a serial `dvc repro ablations/dvc.yaml` leaves them, with the
# same numbers (each cell is seeded; tests/test_ablations.py compares). Finished cells are skipped;
# the claims stage runs last. How many at a time fit and what it saves: README, "The notebook's
# claims, tested". CELLS=<pattern> runs only the cells whose names match it (and not the claims).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:?usage: ablations/parallel.sh N [dvc repro options, e.g. --force]}
shift
dvc repro prepare@mnist prepare@cifar10          # the data every cell reads, made once first
export CLASSIC_CNNS_CONCURRENT_CELLS=$jobs       # recorded in each cell's cost record (reports/costs/)
dvc stage list --name-only ablations/dvc.yaml | grep ':cell@' | grep -e "${CELLS:-}" |
    xargs -P "$jobs" -I '{}' dvc --wait-for-lock repro --single-item "$@" '{}'
[ -n "${CELLS:-}" ] || dvc repro ablations/dvc.yaml   # the cells are done: this runs the claims stage
