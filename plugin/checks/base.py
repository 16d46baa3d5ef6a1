"""What every check shares: its context, its result, the registry of checks and their optional hooks.

A check is a function ``CheckContext -> CheckResult``. :func:`register_check`
may attach hooks to it, all optional, so a plain function from an entry point
is a check too:

* ``validate(options, recipe) -> dict | None``: refuses bad options in one
  line before the first query (:func:`plugin.investigate.plan_investigation`
  calls it for every listed check); may return the options it normalised.
* ``reserve(options, recipe) -> int``: queries of the recipe's budget the
  check needs kept from the corpus pass (the aux check's passes, the
  generative stage's cap).
* ``after``: names of checks that must run before it when both are listed.
* ``answer(summary) -> str``: a clause the model-level answer gains when the
  check applied (e.g. which classes generation named).
"""
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
    earlier: tuple = ()  # the results of the checks that ran before this one, in order (CheckResult)
    # What the checks of one investigation hand on in memory (a loaded generator), never written: a
    # Stable Diffusion pipeline loads in seconds to minutes, and the clone check samples the same one.
    shared: dict = field(default_factory=dict, compare=False, repr=False)


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


def register_check(name: str, *, validate: Callable[[dict, Recipe], dict | None] | None = None,
                   reserve: Callable[[dict, Recipe], int] | None = None, after: tuple[str, ...] = (),
                   answer: Callable[[dict], str] | None = None) -> Callable[[Check], Check]:
    """A decorator registering a check as ``name``, with its optional hooks (see the module docstring)."""

    def deco(check: Check) -> Check:
        for hook, value in (("validate", validate), ("reserve", reserve), ("answer", answer)):
            if value is not None:
                setattr(check, hook, value)
        if after:
            check.after = tuple(after)
        return CHECKS.register(name, check)

    return deco


def validate_options(name: str, options: dict, recipe: Recipe) -> dict:
    """The check's options once its ``validate`` hook accepted them (a one-line error otherwise)."""
    hook = getattr(CHECKS.get(name), "validate", None)
    out = hook(dict(options), recipe) if hook else None
    return options if out is None else out


def reserved_queries(name: str, options: dict, recipe: Recipe) -> int:
    """Queries the check needs kept from the corpus pass (its ``reserve`` hook; 0 without one)."""
    hook = getattr(CHECKS.get(name), "reserve", None)
    return int(hook(options, recipe)) if hook else 0


def run_order(names) -> tuple[str, ...]:
    """``names`` in the order given, except that a check runs after the listed checks its ``after`` names."""
    names = list(dict.fromkeys(names))
    out: list[str] = []

    def place(name: str, seen: tuple[str, ...]) -> None:
        if name in out or name in seen:  # placed already, or a cycle: keep the given order
            return
        for first in getattr(CHECKS.get(name), "after", ()):
            if first in names:
                place(first, (*seen, name))
        out.append(name)

    for name in names:
        place(name, ())
    return tuple(out)


def answer_clause(result: CheckResult) -> str:
    """What an applicable check adds to the model-level answer (its ``answer`` hook; "" without one)."""
    hook = getattr(CHECKS.get(result.name), "answer", None) if result.name in CHECKS else None
    return str(hook(result.summary) or "") if hook and result.applicable else ""
