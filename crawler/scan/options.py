"""The options of one scan, validated once, as a frozen record."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from plugin.core.errors import ConfigError
from plugin.core.recipe import Recipe

DEFAULT_MAX_BYTES = 2 * 2**30
BACKENDS = ("local", "kubernetes")


@dataclass(frozen=True)
class ScanOptions:
    """Everything a scan needs besides its source.

    Attributes:
        corpus: corpus name or folder, passed to each investigation.
        recipe: the investigation knobs.
        recipe_name: kubernetes only: the recipe name passed to the project.
        include_documented: also investigate models whose cards say what they are.
        max_bytes: refuse weights larger than this (None: no cap).
        timeout_s: kill one model's investigation after this many seconds.
        backend: ``local`` (spawned worker per model) or ``kubernetes``.
        backend_config: kubernetes backend config JSON.
        work_dir: kubernetes only: where fetched models are kept for the jobs.
        progress: print one line per model.
        limit: list at most this many models.
        source_options: extra options for the source (``author``, ``search``...).
    """

    corpus: str = "demo"
    recipe: Recipe = field(default_factory=Recipe)
    recipe_name: str | None = None
    include_documented: bool = False
    max_bytes: int | None = DEFAULT_MAX_BYTES
    timeout_s: float = 900
    backend: str = "local"
    backend_config: str | None = None
    work_dir: str | None = None
    progress: bool = False
    limit: int | None = None
    source_options: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.backend == "kubernetes" and not self.backend_config:
            raise ConfigError("--backend kubernetes needs --backend-config FILE")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout_s:g}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ConfigError(f"--max-bytes must be > 0, got {self.max_bytes}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {self.limit}")

    @classmethod
    def build(cls, recipe: Recipe | str | Path | None = None, **kwargs) -> "ScanOptions":
        """Options from keyword arguments, loading ``recipe`` when it is a name or path."""
        if not isinstance(recipe, Recipe):
            kwargs.setdefault("recipe_name", str(recipe) if recipe is not None else None)
            recipe = Recipe.load(recipe)
        for k in ("backend_config", "work_dir"):
            if kwargs.get(k) is not None:
                kwargs[k] = str(kwargs[k])
        kwargs["source_options"] = dict(kwargs.get("source_options") or {})
        return cls(recipe=recipe, **kwargs)

    def params(self) -> dict:
        return {"scan.corpus": str(self.corpus), "scan.backend": self.backend,
                "scan.include_documented": self.include_documented, "scan.max_bytes": self.max_bytes,
                "scan.timeout_s": self.timeout_s, "scan.limit": self.limit}
