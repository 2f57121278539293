#!/usr/bin/env bash
# The whole pipeline in a few minutes on a 2-core CPU, for trying things out: 10,000 training
# images, 3 epochs per model (AlexNet in params.yaml's precision, `auto`: bfloat16 only where that
# was measured faster, e.g. 550 against 352 images/s on an AVX-512 BF16 EPYC), a short diagnose. Runs as a temporary DVC experiment, so the full-quality results in the workspace
# stay as they are (see them side by side with `dvc exp show`). Extra arguments go to `dvc exp run`,
# e.g. a local CIFAR-10 copy where the official URL cannot be reached (README, Data):
#   DATA_MIRROR=<folder of the MNIST files> experiments/quick.sh -S data.cifar10.source=data/external/cifar10.npz
set -u
exec dvc exp run --temp -n quick "$@" \
  -S prepare.train_limit=10000 -S prepare.test_limit=2000 \
  -S models.lenet5.epochs=3 -S models.lenet5.warmup_epochs=0 \
  -S models.alexnet.epochs=3 -S models.alexnet.warmup_epochs=0 \
  -S diagnose.steps=20 -S diagnose.every=5
