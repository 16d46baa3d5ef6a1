"""The Ray backend: one Ray task per model, as many in flight as the cluster has room for.

The scan process is Ray's driver. It lists lazily and claims each model in the
ledger (creating its child run) as before; then, instead of investigating it
itself, it submits one Ray task that fetches the pinned revision onto its node
and runs :func:`crawler.scan.backends.run_claimed` there: the very path of the
local backend, spawned worker and its limits included. At most twice as many
tasks are in flight as fit the cluster's CPUs and GPUs at once (re-read as
nodes come and go), so the driver's memory does not grow with the hub, no
slot idles between two tasks, and an autoscaler (KubeRay) sees the queue as
demand for more nodes.

* **Retries.** Ray retries a task whose worker or node died. The retry
  investigates into the same run, and only while it is RUNNING
  (:func:`crawler.scan.ledger.still_open`): no second run, no reopened one.
  Each start is counted on the run (``task_attempt``) with the node it ran on.
* **Timeouts.** A task not done twice ``timeout_s`` plus the fetch deadline
  (it may have queued behind one model) plus a minute after it was submitted
  is cancelled (its worker killed) and its run ends FAILED ``timeout``; the
  worker's own timer normally comes first.
* **Tracking.** Every node writes to the same tracking store, so a cluster
  needs a tracking server (``mlflow server``, artifacts proxied with
  ``--serve-artifacts`` or in shared object storage); a ``sqlite:`` or file
  store with ``--ray-address`` is refused before any work.
"""
from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from crawler.scan import ledger
from crawler.scan.backends import run_claimed
from crawler.scan.options import ScanOptions
from crawler.hub import HubModel, get_source
from plugin import tracking
from plugin.core.errors import ConfigError
from plugin.outcomes import CRASH, T_NODE, T_TASK_ATTEMPT, TIMEOUT

RAY_MISSING = "--backend ray needs Ray, which is not installed: pip install .[ray]"
TASK_RETRIES = 2  # Ray's retries after a worker or node died; each investigates into the same run
CANCEL_SLACK_S = 60.0
QUEUE_FACTOR = 2  # tasks in flight per slot that fits: one running, one queued behind it


@dataclass(frozen=True)
class Job:
    """What one Ray task needs: the run it investigates into and where to fetch the model from."""

    run_id: str
    model: HubModel
    tracking_uri: str
    fetch_spec: str  # a source spec every node can reach (the demo hub's loopback URL, not "demo")
    source_spec: str  # what the run's identity says
    source_options: dict
    opts: ScanOptions


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address, None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        port = parsed.port
    except ValueError:  # not a number, or out of range
        port = None
    if not parsed.hostname or port is None:
        raise ConfigError(f"--ray-address {address!r}: expected host:port or ray://host:port")
    return parsed.hostname, port


def check_tracking_shared(address: str | None, uri: str) -> None:
    """Refuses a tracking store that only this machine can write to when the cluster may span machines."""
    if not address or address == "local":
        return
    scheme = urlparse(uri).scheme
    if scheme in ("", "file", "sqlite"):
        raise ConfigError(f"tracking URI {uri!r} is local to this machine, but --ray-address joins a cluster "
                          "whose nodes write runs too: start `mlflow server --backend-store-uri ... "
                          "--serve-artifacts` and set MLFLOW_TRACKING_URI=http://HOST:PORT")


def check_address(opts: ScanOptions) -> None:
    """Refuses, in one line, a cluster address nothing answers on, or a store its nodes can't share."""
    _ray()
    check_tracking_shared(opts.ray_address, tracking.tracking_uri())
    hp = _host_port(opts.ray_address) if opts.ray_address else None
    if hp is not None:
        try:
            socket.create_connection(hp, timeout=5).close()
        except OSError as e:
            raise ConfigError(f"--ray-address {opts.ray_address}: no Ray cluster answers there "
                              f"({type(e).__name__}: {e})") from None


def connect(opts: ScanOptions) -> None:
    """Joins ``opts.ray_address`` (else starts a local Ray instance); one-line ConfigError if it can't.

    Everything here happens before the scan creates any run.
    """
    ray = _ray()
    check_address(opts)
    if ray.is_initialized():  # a nightly schedule: the next scan reuses the connection
        return
    try:
        ray.init(address=opts.ray_address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=True)
    except Exception as e:  # noqa: BLE001 - any way of not joining is the user's address to fix
        raise ConfigError(f"--ray-address {opts.ray_address or 'local'}: could not join "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})") from None


def capacity(opts: ScanOptions) -> int:
    """How many models fit the cluster at once with the declared resources (at least one)."""
    res = _ray().cluster_resources()
    fits = res.get("CPU", 0.0) / opts.cpus_per_model
    if opts.gpus_per_model:
        fits = min(fits, res.get("GPU", 0.0) / opts.gpus_per_model)
    return max(1, math.floor(fits + 1e-9))


def _investigate(job: Job) -> str:
    """The Ray task: investigate ``job`` into its run on this node; returns the node id."""
    ray = _ray()
    tracking.set_tracking_uri(job.tracking_uri)
    node = ray.get_runtime_context().get_node_id()
    if not ledger.still_open(job.run_id):  # a retry of a task whose run already ended: nothing to do
        return node
    try:
        attempt = int(tracking.get_run(job.run_id).data.tags.get(T_TASK_ATTEMPT, "0")) + 1
    except ValueError:
        attempt = 1
    tracking.set_run_tags(job.run_id, {T_NODE: node, T_TASK_ATTEMPT: str(attempt)})
    with get_source(job.fetch_spec, **job.source_options) as source:
        run_claimed(source, job.source_spec, job.model, job.opts, job.run_id)
    return node


class RayPool:
    """Submits jobs as Ray tasks, at most ``QUEUE_FACTOR`` x :func:`capacity` in flight."""

    def __init__(self, opts: ScanOptions):
        ray = _ray()
        self.opts = opts
        self.size = capacity(opts) * QUEUE_FACTOR
        self.remote = ray.remote(_investigate).options(
            num_cpus=opts.cpus_per_model, num_gpus=opts.gpus_per_model, max_retries=TASK_RETRIES,
            retry_exceptions=False)
        self.in_flight: dict = {}  # ObjectRef -> (run_id, deadline, key)
        self.grace_s = QUEUE_FACTOR * (opts.timeout_s + opts.fetch_deadline_s) + CANCEL_SLACK_S

    def submit(self, job: Job, key) -> list:
        """Submits ``job``; returns the keys of jobs that finished meanwhile (waits while the pool is full)."""
        done = []
        while len(self.in_flight) >= self.size:
            done += self._collect(block=True)
            self.size = capacity(self.opts) * QUEUE_FACTOR  # nodes joined (autoscaler) or died
        ref = self.remote.remote(job)
        self.in_flight[ref] = (job.run_id, time.monotonic() + self.grace_s, key)
        return done + self._collect(block=False)

    def drain(self) -> list:
        """Waits for every job in flight; returns their keys."""
        done = []
        while self.in_flight:
            done += self._collect(block=True)
        return done

    def _collect(self, block: bool) -> list:
        ray = _ray()
        refs = list(self.in_flight)
        ready, _ = ray.wait(refs, num_returns=1, timeout=1.0 if block else 0)
        done = []
        for ref in ready:
            run_id, _, key = self.in_flight.pop(ref)
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the task and its retries died: the run says so
                _end_open(run_id, f"{type(e).__name__}: {str(e).splitlines()[0][:500] if str(e) else ''}", CRASH,
                          self.opts)
            done.append(key)
        now = time.monotonic()
        for ref, (run_id, deadline, key) in list(self.in_flight.items()):
            if now > deadline:
                ray.cancel(ref, force=True)
                self.in_flight.pop(ref)
                _end_open(run_id, f"TimeoutError: the model's Ray task ran longer than {self.grace_s:g} s; "
                          "task cancelled", TIMEOUT, self.opts, {"timeout_s": self.opts.timeout_s})
                done.append(key)
        return done


def _end_open(run_id: str, reason: str, category: str, opts: ScanOptions, limits: dict | None = None) -> None:
    """Ends ``run_id`` FAILED with ``category`` unless its task already ended it."""
    if ledger.still_open(run_id):
        ledger.fail(run_id, reason, category, limits=limits, backoff_base_s=opts.retry_backoff_s)
    ledger.release(run_id)
