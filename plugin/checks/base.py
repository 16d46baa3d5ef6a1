"""What every check shares: its context, its result and the registry of checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from plugin.core.blackbox import BlackBox
from plugin.core.corpus import Corpus
from plugin.core.recipe import Recipe
from plugin.core.registry import Registry
from plugin.core.search import SearchResult


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may use. The black box still only returns labels."""

    blackbox: BlackBox
    corpus: Corpus
    result: SearchResult
    recipe: Recipe
    info: Any  # plugin.models.checkpoint.CheckpointInfo (label_names, pretrained_cfg, num_classes), or None
    options: dict
    out_dir: Path  # write artifacts under out_dir / <check name>/
    model_id: str = ""


@dataclass(frozen=True)
class CheckResult:
    name: str
    applicable: bool
    summary: dict  # JSON-able; goes into findings.json under the check's key
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: tuple[Path, ...] = ()
    reason: str = ""  # why not applicable


Check = Callable[[CheckContext], CheckResult]
CHECKS: Registry[Check] = Registry("check", group="domain_finder.checks")
register_check = CHECKS.register
