"""Follow-up checks (METHOD.md "Follow-up checks"): a registry of named steps.

A check receives a :class:`CheckContext` (the black box, the corpus, the
search result, the model's facts and the check's own options) and returns a
:class:`CheckResult`: a JSON-able summary that becomes a top-level key of
``findings.json``, MLflow metrics, and artifact files written under
``ctx.out_dir``. A check that does not apply returns a result with
``applicable=False`` and its reason, which is logged too, never silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from plugin.errors import UnknownNameError


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may use. The black box still only returns labels."""

    blackbox: Any
    corpus: Any
    result: Any  # plugin.search.SearchResult
    recipe: Any  # plugin.recipe.Recipe
    info: Any  # crawler.checkpoint.CheckpointInfo (label_names, pretrained_cfg, num_classes)
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
CHECKS: dict[str, Check] = {}


def register_check(name: str):
    def deco(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return deco


def _load_builtin() -> None:
    # Import for their registration side effect; kept lazy so `import plugin`
    # stays cheap and a check's heavy deps (gensim, training) load only when used.
    from plugin.checks import aux, clone, dataset_index, labels  # noqa: F401


def get_check(name: str) -> Check:
    """The check registered as ``name``.

    Raises:
        UnknownNameError: the message lists the valid names.
    """
    _load_builtin()
    if name not in CHECKS:
        raise UnknownNameError(f"unknown check {name!r}; valid checks: {sorted(CHECKS)}")
    return CHECKS[name]


def available_checks() -> list[str]:
    _load_builtin()
    return sorted(CHECKS)
