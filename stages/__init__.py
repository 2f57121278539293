"""The pipeline's stages: one module per DVC stage, plus the models and small shared helpers."""
import os

# Quiet TensorFlow's C++ start-up chatter; a user can still set it to 0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
