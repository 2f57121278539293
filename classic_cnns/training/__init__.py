"""Running a training: the per-epoch loop, augmentation, checkpoints, health checks, devices."""
