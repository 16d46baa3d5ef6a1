"""Environment variables, read in this one module."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from plugin.core.errors import ConfigError


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


def io_threads() -> int:
    """Threads that decode and fetch images (``DOMAIN_FINDER_THREADS``; default: the cores, 2 to 8).

    PIL and numpy release the GIL while they decode and copy, so a GPU box's
    cores keep the device fed; a 2-core machine keeps 2.
    """
    raw = os.environ.get("DOMAIN_FINDER_THREADS", "").strip()
    if not raw:
        return max(2, min(8, os.cpu_count() or 2))
    n = int(raw) if raw.isdecimal() else 0  # isdecimal: what int() reads, no sign, no "²"
    if not 1 <= n <= 256:
        raise ConfigError(f"DOMAIN_FINDER_THREADS must be a whole number from 1 to 256, not {raw!r}")
    return n


# The Hub client and transformers read these at import or load time: no request, no safetensors conversion bot.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DISABLE_SAFETENSORS_CONVERSION": "1"}


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """No network while a checkpoint or weights folder loads; the caller's environment comes back afterwards.

    Restoring matters: a process that loads a model and then lists a hub (a test
    run, a notebook) must not find its Hub client switched off.
    """
    old = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
