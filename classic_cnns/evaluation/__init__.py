"""Scoring a trained model: metrics, per-class scores, confusion, test-time views."""
