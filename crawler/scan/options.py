"""The options of one scan, validated once, as a frozen record."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from plugin.core.errors import ConfigError
from plugin.core.recipe import Recipe
from plugin.view import ui_base

DEFAULT_MAX_BYTES = 2 * 2**30
DEFAULT_WORKER_MEMORY = 16 * 2**30  # address space: torch alone reserves ~4 GiB of it
DEFAULT_RETRY_BACKOFF_S = 3600.0
BACKENDS = ("local", "ray")
RETRY_CHOICES = ("all", "refused-unsafe", "invalid-repo", "failed-corrupt", "hub-error", "timeout", "resource-limit",
                 "crash")


@dataclass(frozen=True)
class ScanOptions:
    """Everything a scan needs besides its source.

    Attributes:
        corpus: corpus name or folder, passed to each investigation.
        recipe: the investigation knobs.
        recipe_name: the recipe's name or file, for each run's provenance.
        include_documented: also investigate models whose cards say what they are.
        max_bytes: refuse weights larger than this (None: no cap).
        timeout_s: kill one model's investigation after this many seconds.
        backend: ``local`` (one model at a time, each in a spawned worker) or ``ray`` (one Ray task
            per model, as many at once as the cluster has room for).
        ray_address: the Ray cluster to join (``host:port``, ``ray://host:port``, ``auto``); None:
            ``$RAY_ADDRESS``, else a local Ray instance on this machine.
        gpus_per_model: GPUs one model's task asks Ray for; fractions share a GPU (0.25: four at once).
        cpus_per_model: CPUs one model's task asks Ray for.
        progress: print one line per model.
        limit: list at most this many models.
        source_options: extra options for the source (``author``, ``search``...).
        worker_memory: the worker's address-space limit in bytes (``RLIMIT_AS``; None: no limit).
        worker_cpu_s: the worker's CPU-time limit in seconds (``RLIMIT_CPU``); None: ``timeout_s``
            times the CPU count.
        fetch_timeout_s: deadline for listing a page and for describing or fetching one model
            (None: ``timeout_s``).
        read_timeout_s: abort a hub request that sends nothing for this long.
        retry_failed: retry settled failures of this category (``all`` for every one) now.
        retry_backoff_s: the first backoff after a second transient failure (doubling, at most a week).
        ui_url: the MLflow UI's address, for absolute links in ``scan_report.html``.
    """

    corpus: str = "demo"
    recipe: Recipe = field(default_factory=Recipe)
    recipe_name: str | None = None
    include_documented: bool = False
    max_bytes: int | None = DEFAULT_MAX_BYTES
    timeout_s: float = 900
    backend: str = "local"
    ray_address: str | None = None
    gpus_per_model: float = 0.0
    cpus_per_model: float = 1.0
    progress: bool = False
    limit: int | None = None
    source_options: dict = field(default_factory=dict, hash=False)
    worker_memory: int | None = DEFAULT_WORKER_MEMORY
    worker_cpu_s: float | None = None
    fetch_timeout_s: float | None = None
    read_timeout_s: float = 30.0
    retry_failed: str | None = None
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    ui_url: str = ""  # the MLflow UI's address for scan_report.html's links ("" : from the tracking URI)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.backend != "ray" and (self.ray_address or self.gpus_per_model):
            raise ConfigError("--ray-address and --gpus-per-model need --backend ray")
        if self.gpus_per_model < 0 or self.cpus_per_model <= 0:
            raise ConfigError(f"--gpus-per-model must be >= 0 and --cpus-per-model > 0, got "
                              f"{self.gpus_per_model:g} and {self.cpus_per_model:g}")
        if self.gpus_per_model > 1 and self.gpus_per_model != int(self.gpus_per_model):
            raise ConfigError(f"--gpus-per-model above 1 must be a whole number, got {self.gpus_per_model:g}")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout_s:g}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ConfigError(f"--max-bytes must be > 0, got {self.max_bytes}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {self.limit}")
        if self.worker_memory is not None and self.worker_memory < 2**28:
            raise ConfigError(f"worker memory limit must be at least 256 MiB, got {self.worker_memory}")
        for name in ("worker_cpu_s", "fetch_timeout_s"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"{name} must be > 0, got {v:g}")
        if self.read_timeout_s <= 0 or self.retry_backoff_s < 0:
            raise ConfigError("read_timeout_s must be > 0 and retry_backoff_s >= 0")
        try:
            ui_base("", self.ui_url)
        except ValueError as e:
            raise ConfigError(f"--ui-url: {e}") from e
        if self.retry_failed is not None and self.retry_failed not in RETRY_CHOICES:
            raise ConfigError(f"--retry-failed {self.retry_failed!r}: valid: {', '.join(RETRY_CHOICES)}")

    @property
    def cpu_limit_s(self) -> float:
        """The worker's RLIMIT_CPU in seconds."""
        return self.worker_cpu_s or self.timeout_s * (os.cpu_count() or 1) + 30

    @property
    def fetch_deadline_s(self) -> float:
        return self.fetch_timeout_s or self.timeout_s

    def limits(self) -> dict:
        """The local limits a refusal can be recorded against (raising one makes a repo eligible again)."""
        return {"max_bytes": self.max_bytes, "timeout_s": self.timeout_s, "worker_memory": self.worker_memory,
                "worker_cpu_s": self.cpu_limit_s, "fetch_timeout_s": self.fetch_deadline_s}

    @classmethod
    def build(cls, recipe: Recipe | str | Path | None = None, **kwargs) -> "ScanOptions":
        """Options from keyword arguments, loading ``recipe`` when it is a name or path."""
        if not isinstance(recipe, Recipe):
            kwargs.setdefault("recipe_name", str(recipe) if recipe is not None else None)
            recipe = Recipe.load(recipe)
        if kwargs.get("backend") == "ray" and not kwargs.get("ray_address"):
            kwargs["ray_address"] = os.environ.get("RAY_ADDRESS") or None
        kwargs["source_options"] = dict(kwargs.get("source_options") or {})
        return cls(recipe=recipe, **kwargs)

    def params(self) -> dict:
        return {"scan.corpus": str(self.corpus), "scan.backend": self.backend,
                "scan.include_documented": self.include_documented, "scan.max_bytes": self.max_bytes,
                "scan.timeout_s": self.timeout_s, "scan.limit": self.limit, "scan.worker_memory": self.worker_memory,
                "scan.worker_cpu_s": self.cpu_limit_s, "scan.retry_failed": self.retry_failed,
                "scan.ray_address": self.ray_address, "scan.gpus_per_model": self.gpus_per_model,
                "scan.cpus_per_model": self.cpus_per_model, "scan.ui_url": self.ui_url}
