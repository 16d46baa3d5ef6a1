"""Where one investigation runs: a spawned local worker, or an MLflow Project run on Kubernetes.

The local worker is a ``multiprocessing`` "spawn" child that is killed after
``timeout_s``. The child run is created by the parent first and its id handed
to the worker, so a crash or timeout is recorded from the parent. The worker
exits by itself when the scan process dies (even by SIGKILL), so a rerun does
not race an orphan into a duplicate run.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

from plugin import tracking
from plugin.core.recipe import Recipe
from plugin.investigate import identity_of, investigate
from plugin.tracking import FAILED, INVESTIGATE, T_OUTCOME
from crawler.scan.ledger import classify_error

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _watch_parent(ppid: int) -> None:
    while True:
        if os.getppid() != ppid:
            os._exit(3)  # the scan died; leave the run to be retried, never finish it behind its back
        time.sleep(0.5)


def _worker(tracking_uri: str, run_id: str, folder: str, corpus: str, recipe: Recipe, model_id: str,
            revision: str, source: str, ppid: int) -> None:
    """Runs in the spawned child: investigate into the run the parent created."""
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    tracking.set_tracking_uri(tracking_uri)
    try:
        identity = identity_of(folder, model_id=model_id, revision=revision, source=source)
        investigate(folder, corpus, recipe, identity=identity, run_id=run_id, progress=False)
    except BaseException as e:
        tracking.set_tag(run_id, T_OUTCOME, classify_error(e))
        if tracking.get_run(run_id).info.status == "RUNNING":  # failed before investigate's own handler
            tracking.fail_run(run_id, f"{type(e).__name__}: {e}", classify_error(e))
        sys.exit(1)
    tracking.set_tag(run_id, T_OUTCOME, INVESTIGATE)


def run_isolated(run_id: str, folder: Path, corpus: str, recipe: Recipe, model_id: str, revision: str,
                 source: str, timeout_s: float) -> None:
    """Investigates in a spawned process; a timeout or crash ends the run FAILED from here."""
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_worker, args=(tracking.tracking_uri(), run_id, str(folder), corpus, recipe,
                                          model_id, revision, source, os.getpid()), daemon=True)
    p.start()
    p.join(timeout_s)
    if p.is_alive():
        p.kill()
        p.join()
        tracking.fail_run(run_id, f"TimeoutError: investigation took longer than {timeout_s:g} s; worker killed", FAILED)
        return
    if tracking.get_run(run_id).info.status == "RUNNING":
        tracking.fail_run(run_id, f"WorkerCrashed: worker exited with code {p.exitcode} without ending its run", FAILED)


def submit_kubernetes(params: dict, backend_config: str | Path, project_uri: str | Path = PROJECT_ROOT):
    """Submits one investigation as an MLflow Project run on Kubernetes (asynchronously).

    See :func:`plugin.tracking.submit_project`. The tests cannot reach a
    cluster, so they replace ``mlflow.projects.run`` with a stand-in and check
    the arguments passed; nothing else is faked.
    """
    return tracking.submit_project(project_uri, "investigate", params, backend="kubernetes",
                                   backend_config=backend_config)
