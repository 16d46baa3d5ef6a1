"""Where one investigation runs: a spawned local worker, or an MLflow Project run on Kubernetes.

The local worker is a ``multiprocessing`` "spawn" child that is killed after
``timeout_s``. The child run is created by the parent first and its id handed
to the worker, so a crash or timeout is recorded from the parent. The worker
exits by itself when the scan process dies (even by SIGKILL), so a rerun does
not race an orphan into a duplicate run. Its address space and CPU time are
limited with ``resource.setrlimit`` before it reads a byte of the model, and
the parent records its peak resident memory on the run.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from plugin import tracking
from plugin.core.recipe import Recipe
from plugin.investigate import identity_of, investigate
from plugin.tracking import CRASH, INVESTIGATE, RESOURCE_LIMIT, T_CATEGORY, T_LIMIT, T_OUTCOME, T_PEAK_RSS, TIMEOUT
from crawler.scan.ledger import classify_error, limits_of


@dataclass(frozen=True)
class WorkerLimits:
    """What one worker may use: address space (bytes) and CPU time (seconds); None means unlimited."""

    memory: int | None = None
    cpu_s: float | None = None


@dataclass(frozen=True)
class WorkerResult:
    """How a worker ended, for the ledger: None category when the run ended by itself."""

    category: str | None
    reason: str
    limits: dict
    peak_rss: int


def _gpu_present() -> bool:
    # CUDA reserves tens of GB of address space when it starts: under RLIMIT_AS it fails to
    # initialise, so on a GPU machine memory is bounded by the parent's RSS watchdog alone.
    return os.path.exists("/dev/nvidiactl") and os.environ.get("CUDA_VISIBLE_DEVICES", None) != ""


def _set_limits(limits: WorkerLimits) -> None:
    import resource

    if limits.memory and not _gpu_present():
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
    if limits.cpu_s:
        cpu = int(limits.cpu_s)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU at the soft limit, SIGKILL 5 s later


def _peak_rss(pid: int) -> int:
    """The process's high-water resident set (VmHWM) in bytes, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _watch_parent(ppid: int) -> None:
    while True:
        if os.getppid() != ppid:
            os._exit(3)  # the scan died; leave the run to be retried, never finish it behind its back
        time.sleep(0.5)


def _worker(tracking_uri: str, run_id: str, folder: str, corpus: str, recipe: Recipe, model_id: str,
            revision: str, source: str, ppid: int, limits: WorkerLimits = WorkerLimits()) -> None:
    """Runs in the spawned child: investigate into the run the parent created."""
    _set_limits(limits)
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    tracking.set_tracking_uri(tracking_uri)
    try:
        identity = identity_of(folder, model_id=model_id, revision=revision, source=source)
        investigate(folder, corpus, recipe, identity=identity, run_id=run_id, progress=False)
    except BaseException as e:
        category = classify_error(e)
        found = limits_of(e)
        if category == RESOURCE_LIMIT and not found and limits.memory:
            found = {"worker_memory": limits.memory}  # an allocation refused under RLIMIT_AS
        tags = {T_OUTCOME: category, T_CATEGORY: category, **{T_LIMIT + k: str(v) for k, v in found.items()}}
        tracking.set_run_tags(run_id, tags)
        if tracking.get_run(run_id).info.status == "RUNNING":  # failed before investigate's own handler
            tracking.fail_run(run_id, f"{type(e).__name__}: {e}", category)
        sys.exit(1)
    tracking.set_tag(run_id, T_OUTCOME, INVESTIGATE)


def run_isolated(run_id: str, folder: Path, corpus: str, recipe: Recipe, model_id: str, revision: str,
                 source: str, timeout_s: float, limits: WorkerLimits = WorkerLimits()) -> WorkerResult:
    """Investigates in a spawned process under ``limits``; a timeout or crash is reported back, not raised.

    Returns:
        A :class:`WorkerResult`: ``category`` is None when the worker ended its run
        itself (FINISHED, or FAILED with its own category), else the category the
        parent must record (timeout, resource-limit, crash).
    """
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_worker, args=(tracking.tracking_uri(), run_id, str(folder), corpus, recipe,
                                          model_id, revision, source, os.getpid(), limits), daemon=True)
    p.start()
    peak, end = 0, time.monotonic() + timeout_s
    while p.is_alive() and time.monotonic() < end:
        peak = max(peak, _peak_rss(p.pid))
        if limits.memory and peak > limits.memory:  # the watchdog behind RLIMIT_AS (and instead of it on a GPU)
            p.kill()
            p.join()
            tracking.set_run_tags(run_id, {T_PEAK_RSS: str(peak)})
            return WorkerResult(RESOURCE_LIMIT, f"ResourceLimitError: worker resident memory {peak} bytes went over "
                                f"the {limits.memory}-byte limit; worker killed", {"worker_memory": limits.memory}, peak)
        p.join(min(0.25, max(0.0, end - time.monotonic())))
    if p.is_alive():
        peak = max(peak, _peak_rss(p.pid))
        p.kill()
        p.join()
        result = WorkerResult(TIMEOUT, f"TimeoutError: investigation took longer than {timeout_s:g} s; worker killed",
                              {"timeout_s": timeout_s}, peak)
    elif tracking.get_run(run_id).info.status == "RUNNING":
        code = p.exitcode or 0
        if code in (-signal.SIGXCPU, -signal.SIGKILL) and limits.cpu_s:
            result = WorkerResult(RESOURCE_LIMIT, f"ResourceLimitError: worker killed by signal {-code} "
                                  f"(CPU limit {limits.cpu_s:g} s, memory limit {limits.memory})",
                                  {"worker_cpu_s": limits.cpu_s}, peak)
        else:
            result = WorkerResult(CRASH, f"WorkerCrashed: worker exited with code {code} without ending its run",
                                  {}, peak)
    else:
        result = WorkerResult(None, "", {}, peak)
    if peak:
        tracking.set_run_tags(run_id, {T_PEAK_RSS: str(peak)})
    return result


def submit_kubernetes(params: dict, backend_config: str | Path, project_uri: str | Path = PROJECT_ROOT):
    """Submits one investigation as an MLflow Project run on Kubernetes (asynchronously).

    See :func:`plugin.tracking.submit_project`. The tests cannot reach a
    cluster, so they replace ``mlflow.projects.run`` with a stand-in and check
    the arguments passed; nothing else is faked.
    """
    return tracking.submit_project(project_uri, "investigate", params, backend="kubernetes",
                                   backend_config=backend_config)
