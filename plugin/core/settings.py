"""Environment variables, read in this one module."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where decoded images and built demo artefacts are cached (``DOMAIN_FINDER_CACHE``)."""
    return Path(os.environ.get("DOMAIN_FINDER_CACHE", Path.home() / ".cache" / "domain-finder"))


def wordnet_dir() -> Path:
    """The WordNet 3.0 database folder (``DOMAIN_FINDER_WORDNET``)."""
    return Path(os.environ.get("DOMAIN_FINDER_WORDNET", "/usr/share/wordnet"))


def fashion_mnist_dir() -> Path:
    """Debian's Fashion-MNIST folder (``DOMAIN_FINDER_FASHION_MNIST``)."""
    return Path(os.environ.get("DOMAIN_FINDER_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def tracking_uri_default() -> str:
    """The MLflow store used when ``MLFLOW_TRACKING_URI`` is unset."""
    return os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
