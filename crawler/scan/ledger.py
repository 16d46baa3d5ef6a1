"""MLflow as the scan's ledger: which ``(repo, sha)`` is settled, claims, retries and reaping dead runs.

There is no other state file; all store access goes through :mod:`plugin.tracking`,
and the ledger's queries (filter strings built only from validated or
hashed values) live here. The words it uses are in :mod:`plugin.outcomes`.

* **Settled.** A ``(repo, sha)`` with a FINISHED run tagged ``status=finished``
  is settled. So is one whose current FAILED run is a *permanent* verdict:
  ``refused-unsafe`` or ``failed-corrupt`` about bytes verified against the
  hub's sha256 / git oid, or ``invalid-repo`` (the listed id itself).
* **Transient.** ``hub-error``, ``timeout``, ``resource-limit``, ``crash``, and
  verdicts on unverified bytes are retried on later scans with an exponential
  backoff recorded on the run (``retry_after``). A refusal by a local limit
  records the limit's value (``limit.<name>``); raising that limit makes the
  model eligible at once. ``retry_failed`` (``scan --retry-failed``) overrides
  both.
* **Claims.** Before investigating, a scan creates the child run and then looks
  again: it keeps the claim only if no other live run of the same key exists,
  else it deletes its own and backs off. Whoever keeps a claim saw no rival, and
  of two racing claims at least one sees the other, so two scans never both
  investigate one ``(repo, sha)``. A retry marks the failures it replaces
  ``superseded_by``, so each ``(repo, sha)`` has one *current* outcome.
* **Reaping.** RUNNING runs whose owning scan process is dead (same host), or
  older than the timeout plus slack, end KILLED; so do dead scans' parent runs.
  The owner is always the scan (the driver), never the worker or the Ray node
  that investigates: a run left by a dead node is retried into by its live
  driver, or reaped with its dead driver.
* **Distributed retries.** A task that a distributed backend retries
  investigates into the same run, and only while it is RUNNING
  (:func:`still_open`); so a retry never adds a run, nor reopens an ended one.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import time

from plugin import tracking
from plugin.outcomes import (CRASH, DETERMINISTIC, PERMANENT, SETTLED_UNVERIFIED, T_ATTEMPT, T_CATEGORY, T_KEY, T_LIMIT,
                             T_OWNER, T_RETRY_AFTER, T_SUPERSEDED, T_VERIFIED)
from plugin.tracking import T_MODEL_ID, T_OUTCOME, T_REVISION, T_SCAN, T_STATUS

MAX_BACKOFF_S = 7 * 24 * 3600
STALE_SLACK_S = 60
_LIVE: set[str] = set()  # run ids this process holds right now (its other RUNNING runs are dead)


def backoff_s(attempt: int, base_s: float, local_limit: bool = False) -> float:
    """How long a transient failure waits before it is retried, at most a week.

    A transport fault is retried by the very next scan, then after ``base_s``,
    doubling. A refusal by a local limit would only fail again under the same
    limit, so it waits ``base_s`` from the first time (raising the limit lifts the wait).
    """
    n = attempt if local_limit else attempt - 1
    return 0.0 if n <= 0 else min(MAX_BACKOFF_S, base_s * 2 ** (n - 1))


# -- owners -------------------------------------------------------------------
def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tag() -> str:
    """``host:pid:start`` of this process (start time guards against a recycled pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _owner_alive(owner: str, run_id: str) -> bool | None:
    """True/False when this host can tell; None for another host's process."""
    host, _, rest = owner.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return None
    pid = int(pid_s)
    if pid == os.getpid():
        return run_id in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _start_time(pid) == start


def _stale(run, timeout_s: float, now_ms: float) -> bool:
    alive = _owner_alive(run.data.tags.get(T_OWNER, ""), run.info.run_id) if run.data.tags.get(T_OWNER) else None
    if alive is not None:
        return not alive
    return now_ms - run.info.start_time > (timeout_s + STALE_SLACK_S) * 1000


# -- queries ------------------------------------------------------------------
def _quote(value: str) -> str:
    """An MLflow filter-string literal; backslash and quote escaped."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def ledger_key(repo_id: str, sha: str) -> str:
    """A filter-safe key for ``(repo_id, sha)``: 40 hex digits, whatever the hub sent."""
    return hashlib.sha256(f"{repo_id}\0{sha}".encode("utf-8", "surrogatepass")).hexdigest()[:40]


def runs_of(experiment_id: str, repo_id: str, sha: str, *, running_only: bool = False, max_results: int = 100) -> list:
    """Runs tagged with ``(repo_id, sha)``, newest first (older runs carry no ledger key)."""
    q = f"tags.`{T_MODEL_ID}` = {_quote(repo_id)} and tags.`{T_REVISION}` = {_quote(sha)}"
    if running_only:
        q += " and attributes.status = 'RUNNING'"
    return tracking.search_runs(experiment_id, q, max_results=max_results)


def runs_of_key(experiment_id: str, key: str, *, running_only: bool = False, max_results: int = 500) -> list:
    """Runs tagged with the ledger key ``key`` (see :func:`ledger_key`), newest first."""
    if not re.fullmatch(r"[0-9a-f]{40}", key):
        raise ValueError(f"not a ledger key: {key[:60]!r}")
    q = f"tags.`{T_KEY}` = '{key}'"
    if running_only:
        q += " and attributes.status = 'RUNNING'"
    return tracking.search_runs(experiment_id, q, max_results=max_results)


def running_claims(experiment_id: str) -> list:
    """Child runs still RUNNING in ``experiment_id`` that a scan claimed (they carry an owner and a ledger key)."""
    runs = tracking.search_runs(experiment_id, "attributes.status = 'RUNNING'", max_results=5000)
    return [r for r in runs if r.data.tags.get(T_OWNER) and r.data.tags.get(T_KEY) and T_SCAN not in r.data.tags]


def running_scans(experiment_id: str) -> list:
    """Parent scan runs still RUNNING in ``experiment_id``."""
    return tracking.search_runs(experiment_id, f"tags.`{T_SCAN}` = '1' and attributes.status = 'RUNNING'")


def still_open(run_id: str) -> bool:
    """True while ``run_id`` is RUNNING: a retried or late task must not write into an ended run."""
    return tracking.get_run(run_id).info.status == "RUNNING"


def _runs(experiment_id: str, repo_id: str, sha: str, running_only: bool = False) -> list:
    """Runs of ``(repo_id, sha)``: by ledger key, plus (for valid ids only) by the id tags of older runs."""
    from crawler.hub import valid_repo_id as valid_hub_repo_id, valid_sha

    runs = {r.info.run_id: r for r in runs_of_key(experiment_id, ledger_key(repo_id, sha),
                                                           running_only=running_only)}
    if valid_hub_repo_id(repo_id) and valid_sha(sha):  # validated: safe inside a filter string
        for r in runs_of(experiment_id, repo_id, sha, running_only=running_only, max_results=500):
            runs.setdefault(r.info.run_id, r)
    return sorted(runs.values(), key=lambda r: r.info.start_time or 0, reverse=True)


def _current(runs: list) -> list:
    return [r for r in runs if not r.data.tags.get(T_SUPERSEDED) and r.info.status in ("FINISHED", "FAILED")]


def category_of(run) -> str:
    t = run.data.tags
    return t.get(T_CATEGORY) or (t.get(T_OUTCOME) if t.get(T_OUTCOME) in DETERMINISTIC else "") or CRASH


def _limit_raised(run, limits: dict) -> bool:
    for k, v in run.data.tags.items():
        if k.startswith(T_LIMIT):
            name = k[len(T_LIMIT):]
            if name in limits:
                now = limits[name]
                try:
                    if now is None or float(now) > float(v):
                        return True
                except ValueError:
                    continue
    return False


def _settles(run, limits: dict, retry_failed: str | None, now: float) -> bool:
    t = run.data.tags
    if run.info.status == "FINISHED":
        return t.get(T_STATUS) == "finished"
    category = category_of(run)
    if retry_failed is not None and retry_failed in ("all", category):
        return False
    if T_CATEGORY not in t:  # a run from before categories: the old rule
        return t.get(T_OUTCOME) in DETERMINISTIC
    if category in PERMANENT and (category in SETTLED_UNVERIFIED or t.get(T_VERIFIED) == "1"):
        return True
    if _limit_raised(run, limits):
        return False
    try:
        return now < float(t.get(T_RETRY_AFTER, "0"))
    except ValueError:
        return False


def find_audit(experiment_id: str, repo_id: str, sha: str, *, limits: dict | None = None,
               retry_failed: str | None = None, now: float | None = None, runs: list | None = None):
    """The run that settles ``(repo_id, sha)`` for now, or None (see the module docstring)."""
    now = time.time() if now is None else now
    current = _current(runs if runs is not None else _runs(experiment_id, repo_id, sha))
    for r in current:
        if r.info.status == "FINISHED" and r.data.tags.get(T_STATUS) == "finished":
            return r
    failed = [r for r in current if r.info.status == "FAILED"]
    if failed and _settles(failed[0], limits or {}, retry_failed, now):
        return failed[0]
    return None


def reap_stale_runs(experiment_id: str, repo_id: str, sha: str, timeout_s: float) -> int:
    """Ends as KILLED the RUNNING runs of ``(repo_id, sha)`` that a dead scan left behind.

    A run is dead when its owner process is gone (same host), or, when that
    cannot be told, when it is still RUNNING after ``timeout_s`` plus a minute
    of slack, longer than its own scan would have let it run. Runs when a
    FINISHED run exists too. Returns how many runs were reaped.
    """
    now_ms = time.time() * 1000
    reaped = 0
    for r in _runs(experiment_id, repo_id, sha, running_only=True):
        if r.info.status == "RUNNING" and _stale(r, timeout_s, now_ms):
            tracking.fail_run(r.info.run_id, "the scan that owned this run died before it finished", status="KILLED")
            reaped += 1
    return reaped


def reap_dead_scans(experiment_id: str) -> int:
    """Ends as KILLED the parent scan runs whose scan process is dead (on this host)."""
    reaped = 0
    for r in running_scans(experiment_id):
        owner = r.data.tags.get(T_OWNER, "")
        if owner and _owner_alive(owner, r.info.run_id) is False:
            tracking.fail_run(r.info.run_id, "the scan process died before it finished", status="KILLED")
            reaped += 1
    return reaped


def reap_dead_claims(experiment_id: str, timeout_s: float) -> int:
    """Ends as KILLED every claim a dead scan left RUNNING in ``experiment_id``.

    :func:`reap_stale_runs` reaps a key's runs when a scan claims that key
    again; a claim on a repo the next scans never claim (settled meanwhile,
    or gone from the listing) would otherwise stay RUNNING for good.
    """
    now_ms = time.time() * 1000
    reaped = 0
    for r in running_claims(experiment_id):
        if _stale(r, timeout_s, now_ms):
            tracking.fail_run(r.info.run_id, "the scan that owned this run died before it finished", status="KILLED")
            reaped += 1
    return reaped


def hold(run_id: str) -> None:
    """Marks ``run_id`` as held by this process (a live owner)."""
    _LIVE.add(run_id)


def release(run_id: str) -> None:
    _LIVE.discard(run_id)


# -- claims and failures ----------------------------------------------------------
def claim(experiment_id: str, parent_id: str, repo_id: str, sha: str, tags: dict, *, timeout_s: float,
          limits: dict | None = None, retry_failed: str | None = None, rounds: int = 4):
    """Claims ``(repo_id, sha)`` for this scan: ``(run_id, None)``, or ``(None, run)`` of who settles or holds it.

    The claim is a child run tagged with the ledger key and this process as
    owner; see the module docstring for why at most one claim survives.
    """
    key = ledger_key(repo_id, sha)
    holder = None
    for i in range(rounds):
        reap_stale_runs(experiment_id, repo_id, sha, timeout_s)
        runs = _runs(experiment_id, repo_id, sha)
        settled = find_audit(experiment_id, repo_id, sha, limits=limits, retry_failed=retry_failed, runs=runs)
        if settled is not None:
            return None, settled
        prior = next((r for r in _current(runs) if r.info.status == "FAILED"), None)
        attempt = 1
        if prior is not None:
            try:
                attempt = int(prior.data.tags.get(T_ATTEMPT, "1")) + 1
            except ValueError:
                attempt = 2
        run_id = tracking.create_child_run(experiment_id, parent_id, str(repo_id)[:250],
                                           {**tags, T_KEY: key, T_OWNER: owner_tag(), T_ATTEMPT: str(attempt)})
        hold(run_id)
        runs = _runs(experiment_id, repo_id, sha)
        rivals = [r for r in runs if r.info.run_id != run_id and r.info.status == "RUNNING"]
        settled = find_audit(experiment_id, repo_id, sha, limits=limits, retry_failed=retry_failed,
                             runs=[r for r in runs if r.info.run_id != run_id])
        if not rivals and settled is None:
            for r in _current(runs):
                if r.info.status == "FAILED":
                    tracking.set_run_tags(r.info.run_id, {T_SUPERSEDED: run_id})
            return run_id, None
        release(run_id)
        tracking.delete_run(run_id)
        if settled is not None:
            return None, settled
        holder = rivals[0]
        time.sleep(random.uniform(0.05, 0.4) * (i + 1))  # two scans in lockstep: let one of them through
    return None, holder


def fail(run_id: str, reason: str, category: str, *, verified: bool = False, limits: dict | None = None,
         backoff_base_s: float = 3600.0, attempt: int | None = None, terminate: bool = True) -> None:
    """Ends ``run_id`` FAILED with its reason, category, verification, limits and retry time.

    With ``terminate=False`` (a run its worker already ended) only the ledger's tags are added.
    """
    tags = {T_CATEGORY: category, T_VERIFIED: "1" if verified else "0"}
    for name, value in (limits or {}).items():
        tags[T_LIMIT + name] = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    if attempt is None:
        try:
            attempt = int(tracking.get_run(run_id).data.tags.get(T_ATTEMPT, "1"))
        except ValueError:
            attempt = 1
    permanent = category in PERMANENT and (verified or category in SETTLED_UNVERIFIED)
    if not permanent:
        tags[T_RETRY_AFTER] = str(int(time.time() + backoff_s(attempt, backoff_base_s, bool(limits))))
    if not terminate:
        tracking.set_run_tags(run_id, {T_OUTCOME: category, **tags})
    else:
        tracking.set_run_tags(run_id, tags)
        tracking.fail_run(run_id, reason, category)
    release(run_id)


__all__ = ["backoff_s", "category_of", "claim", "fail", "find_audit", "hold", "ledger_key", "owner_tag",
           "reap_dead_claims", "reap_dead_scans", "reap_stale_runs", "release", "runs_of", "runs_of_key",
           "running_claims", "running_scans", "still_open"]
