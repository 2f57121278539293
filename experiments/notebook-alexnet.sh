#!/usr/bin/env bash
# The reference notebook's AlexNet, as a named DVC experiment: Adam at 1e-3, batch 64, inputs x/255,
# constant rate, no augmentation, 5 epochs. It does not learn (loss stays at ln 10 = 2.3026); the
# training-health check stops it after `health.check_after_epochs` epochs with a "did not learn"
# message, the stage exits non-zero, and its MLflow run is marked FAILED with the reason as a tag.
# Why it fails is measured by the `diagnose` stage and explained in reports/report.md.
set -u
exec dvc exp run --temp -n notebook-alexnet "$@" \
  -S models.alexnet.optimizer=adam -S models.alexnet.learning_rate=0.001 \
  -S models.alexnet.momentum=0.0 -S models.alexnet.nesterov=false -S models.alexnet.weight_decay=0.0 \
  -S models.alexnet.schedule=constant -S models.alexnet.warmup_epochs=0 -S models.alexnet.label_smoothing=0.0 \
  -S models.alexnet.batch_size=64 -S models.alexnet.epochs=5 \
  -S models.alexnet.augment_crop_padding=0 -S models.alexnet.augment_flip=false -S models.alexnet.augment_cutout=0 \
  -S models.alexnet.input_scaling=unit -S models.alexnet.steps_per_execution=1 \
  -S models.alexnet.mixed_precision=false \
  train@alexnet
