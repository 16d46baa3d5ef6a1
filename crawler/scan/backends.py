"""How one claimed model is investigated: fetched, checked, and run in an isolated worker.

:func:`run_claimed` is the one path for both backends: the local backend calls
it in the scan process, the Ray backend (:mod:`crawler.scan.ray_backend`) in a
Ray task on whichever node has room. It fetches the pinned revision, runs the
static checks, investigates in a worker, and records the outcome on the run
the scan claimed.

The worker is a ``multiprocessing`` "spawn" child that is killed after
``timeout_s``. The child run is created by the scan first and its id handed
to the worker, so a crash or timeout is recorded from outside. The worker
exits by itself when its parent dies (even by SIGKILL), so a rerun does not
race an orphan into a duplicate run. Its address space and CPU time are
limited with ``resource.setrlimit`` before it reads a byte of the model, never
above the hard limits it inherits (a batch system's ``ulimit -v``): a limit
clamped that way is tagged on the run (``worker_limit.*``). The parent
records the worker's peak resident memory on the run.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from crawler.scan import ledger
from crawler.scan.options import ScanOptions
from crawler.scan.view import downloaded_hashes
from crawler.hub import HubModel, ModelSource
from plugin import tracking
from plugin.core.recipe import Recipe
from plugin.investigate import identity_of, investigate
from plugin.models.formats import preflight
from plugin.outcomes import (CRASH, INVESTIGATE, RESOURCE_LIMIT, T_CATEGORY, T_LIMIT, T_PEAK_RSS, T_WORKER_LIMIT,
                             TIMEOUT, failure_category, limits_of)
from plugin.tracking import T_ERROR, T_OUTCOME


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


def _clamped(which: int, soft: int, hard: int) -> tuple[int, int, bool]:
    """``(soft, hard, clamped)`` for ``setrlimit``: never above the hard limit this process inherited.

    An unprivileged process may lower its hard limit but never raise it
    ("ValueError: not allowed to raise maximum limit").
    """
    import resource

    _, inherited = resource.getrlimit(which)
    if inherited == resource.RLIM_INFINITY or hard <= inherited:
        return soft, hard, False
    return min(soft, inherited), inherited, True


def _set_limits(limits: WorkerLimits) -> dict[str, str]:
    """Applies ``limits`` to this process; returns the ``worker_limit.*`` tags of what really holds."""
    import resource

    tags: dict[str, str] = {}
    if limits.memory and not _gpu_present():
        soft, hard, clamped = _clamped(resource.RLIMIT_AS, limits.memory, limits.memory)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        tags[T_WORKER_LIMIT + "memory"] = str(soft)
        if clamped:
            tags[T_WORKER_LIMIT + "memory_clamped"] = f"inherited hard limit {hard} < --worker-memory {limits.memory}"
    if limits.cpu_s:
        cpu = int(limits.cpu_s)
        soft, hard, clamped = _clamped(resource.RLIMIT_CPU, cpu, cpu + 5)  # SIGXCPU at soft, SIGKILL 5 s later
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        tags[T_WORKER_LIMIT + "cpu_s"] = str(soft)
        if clamped:
            tags[T_WORKER_LIMIT + "cpu_s_clamped"] = f"inherited hard limit {hard} s < --worker-cpu {cpu + 5} s"
    return tags


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


def _watch_parent(ppid: int) -> None:
    while True:
        if os.getppid() != ppid:
            os._exit(3)  # the scan died; leave the run to be retried, never finish it behind its back
        time.sleep(0.5)


def _worker(tracking_uri: str, run_id: str, folder: str, corpus: str, recipe: Recipe, model_id: str,
            revision: str, source: str, ppid: int, limits: WorkerLimits = WorkerLimits(),
            recipe_name: str | None = None) -> None:
    """Runs in the spawned child: investigate into the run the parent created."""
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    tracking.set_tracking_uri(tracking_uri)
    try:
        tracking.set_run_tags(run_id, _set_limits(limits))
        identity = identity_of(folder, model_id=model_id, revision=revision, source=source)
        investigate(folder, corpus, recipe, identity=identity, run_id=run_id, progress=False, recipe_name=recipe_name)
    except BaseException as e:
        category = failure_category(e)
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
                 source: str, timeout_s: float, limits: WorkerLimits = WorkerLimits(),
                 recipe_name: str | None = None) -> WorkerResult:
    """Investigates in a spawned process under ``limits``; a timeout or crash is reported back, not raised.

    Returns:
        A :class:`WorkerResult`: ``category`` is None when the worker ended its run
        itself (FINISHED, or FAILED with its own category), else the category the
        parent must record (timeout, resource-limit, crash).
    """
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_worker, args=(tracking.tracking_uri(), run_id, str(folder), corpus, recipe,
                                          model_id, revision, source, os.getpid(), limits, recipe_name), daemon=True)
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


def run_claimed(source: ModelSource, source_spec: str, model: HubModel, opts: ScanOptions, run_id: str) -> None:
    """Fetches ``model``'s pinned revision, checks it, investigates it into ``run_id`` and ends that run.

    Every failure ends the run FAILED with its category (nothing is raised),
    so a caller only has to read the run back.
    """
    tmp = tempfile.mkdtemp(prefix="domain-finder-scan-")
    verified = False
    try:
        fetched = source.fetch_verified(model, Path(tmp) / "model", max_bytes=opts.max_bytes,
                                        deadline=time.monotonic() + opts.fetch_deadline_s)
        verified = fetched.verified
        tracking.set_run_tags(run_id, downloaded_hashes(fetched.folder, tracking.TAG_PREFIX + "sha256."))
        preflight(fetched.folder)  # by format: config limits, weights headers, pickle allowlist, ONNX domains
        result = run_isolated(run_id, fetched.folder, str(opts.corpus), opts.recipe, model.repo_id, model.sha,
                              source_spec, opts.timeout_s, WorkerLimits(opts.worker_memory, opts.cpu_limit_s),
                              opts.recipe_name)
        if result.category is not None:
            ledger.fail(run_id, result.reason, result.category, verified=verified, limits=result.limits,
                        backoff_base_s=opts.retry_backoff_s)
        else:
            run = tracking.get_run(run_id)
            if run.info.status != "FINISHED":  # the worker recorded its own failure: add the ledger's tags
                ledger.fail(run_id, run.data.tags.get(T_ERROR, "failed"), ledger.category_of(run), verified=verified,
                            backoff_base_s=opts.retry_backoff_s, terminate=False)
    except Exception as e:  # noqa: BLE001 - recorded on the child run; the scan goes on
        ledger.fail(run_id, f"{type(e).__name__}: {e}", failure_category(e), verified=verified, limits=limits_of(e),
                    backoff_base_s=opts.retry_backoff_s)
    finally:
        ledger.release(run_id)
        shutil.rmtree(tmp, ignore_errors=True)
