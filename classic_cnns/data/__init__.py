"""Datasets: the registry, the published file formats, downloading, and the prepared splits."""
