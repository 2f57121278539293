#!/usr/bin/env bash
# The reference notebook's AlexNet, as a named DVC experiment: its settings (params.yaml
# diagnose.notebook: Adam at 1e-3, batch 64, inputs x/255) with everything else as the notebook had
# it (constant rate, no augmentation, float32, 5 epochs). It does not learn (loss stays at
# ln 10 = 2.3026); the training-health check stops it after `health.check_after_epochs` epochs with a
# "did not learn" message, the stage exits non-zero, and its MLflow run is marked FAILED with the
# reason as a tag. Why it fails is measured by the `diagnose` stage and explained in reports/report.md.
set -eu
overrides=$(python -m classic_cnns.analysis.diagnose alexnet)
# shellcheck disable=SC2086  # one -S per word
exec dvc exp run --temp -n notebook-alexnet "$@" $overrides train@alexnet
