"""MLflow: the store, a run's life and tags, per-epoch logging, the model registry."""
