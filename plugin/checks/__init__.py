"""Follow-up checks (METHOD.md "Follow-up checks"): a registry of named steps.

A check receives a :class:`CheckContext` (the black box, the corpus, the
search result, the model's facts and the check's own options) and returns a
:class:`CheckResult`: a JSON-able summary that becomes a top-level key of
``findings.json``, MLflow metrics, and artifact files written under
``ctx.out_dir``. A check that does not apply returns a result with
``applicable=False`` and its reason, which is logged too, never silently dropped.
"""
from __future__ import annotations

from plugin.checks.base import CHECKS, Check, CheckContext, CheckResult, register_check
# The built-in checks register themselves on import. Their heavy dependencies
# (gensim, scipy, training; torch and diffusers for generative) are imported inside the check functions, so this stays cheap.
from plugin.checks import aux, clone, dataset_index, generative, labels  # noqa: E402,F401  isort: skip


def get_check(name: str) -> Check:
    """The check registered as ``name``.

    Raises:
        UnknownNameError: the message lists the valid names.
    """
    return CHECKS.get(name)


def available_checks() -> list[str]:
    return CHECKS.names()


__all__ = ["CHECKS", "Check", "CheckContext", "CheckResult", "available_checks", "get_check", "register_check"]
