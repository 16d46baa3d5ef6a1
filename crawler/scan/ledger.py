"""MLflow as the scan's ledger: which ``(repo, sha)`` is settled, and reaping dead runs.

There is no other state file. A model whose ``(repo_id, sha)`` already has a
FINISHED run tagged ``status=finished`` is settled; so is one whose earlier run
ended with a deterministic verdict about the files themselves
(``refused-unsafe``, ``failed-corrupt``). Timeouts, crashes and hub errors are
retried on the next scan. All store access goes through :mod:`plugin.tracking`.
"""
from __future__ import annotations

import time

from plugin import tracking
from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.tracking import DETERMINISTIC, FAILED, FAILED_CORRUPT, REFUSED_UNSAFE, T_OUTCOME, T_STATUS


def classify_error(e: BaseException) -> str:
    if isinstance(e, UnsafeCheckpointError):
        return REFUSED_UNSAFE
    if isinstance(e, CheckpointError):
        return FAILED_CORRUPT
    return FAILED


def find_audit(experiment_id: str, repo_id: str, sha: str):
    """The earlier run that settles ``(repo_id, sha)``, or None (see the module docstring)."""
    runs = tracking.runs_of(experiment_id, repo_id, sha)
    for r in runs:
        if r.info.status == "FINISHED" and r.data.tags.get(T_STATUS) == "finished":
            return r
    for r in runs:
        if r.info.status == "FAILED" and r.data.tags.get(T_OUTCOME) in DETERMINISTIC:
            return r
    return None


def reap_stale_runs(experiment_id: str, repo_id: str, sha: str, timeout_s: float) -> int:
    """Ends as KILLED the RUNNING runs of ``(repo_id, sha)`` that a dead scan left behind.

    A run still RUNNING after ``timeout_s`` (plus a minute of slack) cannot
    belong to a live worker, which its own scan would have killed by then; so
    after a SIGKILL the store shows what happened instead of a run forever
    "running". Returns how many runs were reaped.
    """
    now_ms = time.time() * 1000
    reaped = 0
    for r in tracking.runs_of(experiment_id, repo_id, sha, running_only=True):
        if now_ms - r.info.start_time > (timeout_s + 60) * 1000:
            tracking.fail_run(r.info.run_id, "the scan that owned this run died before it finished", status="KILLED")
            reaped += 1
    return reaped
