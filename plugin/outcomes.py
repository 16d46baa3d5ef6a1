"""The scan's vocabulary: outcomes, failure categories, the ledger's tags, and what a failure is called.

Plain names with no I/O, low in the layers so that the investigation, the
MLflow seam and the crawler all speak the same words. :func:`failure_category`
is the one place that decides what an exception is called; the ledger
(:mod:`crawler.scan.ledger`) decides what a category means for retries.
"""
from __future__ import annotations

from plugin.core.errors import CheckpointError, HubError, UnsafeCheckpointError, UnsupportedCheckpointError
from plugin.models.limits import ResourceLimitError

TAG_PREFIX = "domain_finder."

# -- outcomes: the values of the ``outcome`` tag and of a scan's summary rows ----
INVESTIGATE = "investigate"
SKIPPED_DOCUMENTED = "skipped-documented"
SKIPPED_ENCODER = "skipped-encoder"
REFUSED_UNSAFE = "refused-unsafe"
FAILED_CORRUPT = "failed-corrupt"
FAILED_UNSUPPORTED = "failed-unsupported"  # well-formed, in a form we do not reproduce (an image processor...)
FAILED = "failed"
ALREADY_AUDITED = "already-audited"
# Decided from the listing's files and config, before any download. An unsupported format is a row with
# no run; a repo that asks for remote code is a security outcome, so it is also a FAILED run (loud in the
# runs table), settled for its sha like an invalid repo id.
REFUSED_REMOTE_CODE = "refused-remote-code"
SKIPPED_UNSUPPORTED_FORMAT = "skipped-unsupported-format"
OUTCOMES = (INVESTIGATE, SKIPPED_DOCUMENTED, SKIPPED_ENCODER, REFUSED_UNSAFE, FAILED_CORRUPT, FAILED_UNSUPPORTED,
            REFUSED_REMOTE_CODE, SKIPPED_UNSUPPORTED_FORMAT)
# Verdicts about the files: not retried for the same sha.
DETERMINISTIC = (REFUSED_UNSAFE, FAILED_CORRUPT, FAILED_UNSUPPORTED)

# -- failure categories: every FAILED child run of a scan carries one --------------
INVALID_REPO = "invalid-repo"
HUB_ERROR = "hub-error"
TIMEOUT = "timeout"
RESOURCE_LIMIT = "resource-limit"
CRASH = "crash"
CATEGORIES = (REFUSED_UNSAFE, REFUSED_REMOTE_CODE, INVALID_REPO, FAILED_CORRUPT, FAILED_UNSUPPORTED, HUB_ERROR, TIMEOUT,
              RESOURCE_LIMIT, CRASH)
# Settled when the bytes were verified.
PERMANENT = (REFUSED_UNSAFE, FAILED_CORRUPT, FAILED_UNSUPPORTED, INVALID_REPO, REFUSED_REMOTE_CODE)
SETTLED_UNVERIFIED = (INVALID_REPO, REFUSED_REMOTE_CODE)  # ... or at once: decided from the name or config, not bytes
TRANSIENT = (HUB_ERROR, TIMEOUT, RESOURCE_LIMIT, CRASH)  # retried on later scans, with a backoff

# -- the ledger's tags (crawler.scan.ledger) ----------------------------------------
T_CATEGORY = TAG_PREFIX + "category"
T_KEY = TAG_PREFIX + "key"  # hex digest of (repo, sha): the only hub-derived value a filter string ever holds raw
T_ATTEMPT = TAG_PREFIX + "attempt"
T_RETRY_AFTER = TAG_PREFIX + "retry_after"  # epoch seconds before which a transient failure is not retried
T_VERIFIED = TAG_PREFIX + "verified"  # "1": the bytes judged matched the hub's sha256 / git oid
T_LIMIT = TAG_PREFIX + "limit."  # + name: the local limit's value when it refused
T_SUPERSEDED = TAG_PREFIX + "superseded_by"  # a retried failure points at the run that retried it
T_OWNER = TAG_PREFIX + "owner"  # host:pid:start of the scan process that holds the run
T_PEAK_RSS = TAG_PREFIX + "worker_peak_rss"  # bytes
T_WORKER_LIMIT = TAG_PREFIX + "worker_limit."  # + memory | cpu_s: the limit the worker really ran under
T_NODE = TAG_PREFIX + "node"  # the Ray node (or host) that investigated the run
T_TASK_ATTEMPT = TAG_PREFIX + "task_attempt"  # how many times a distributed task started on this run

_ALLOC_FAILURES = ("can't allocate memory", "out of memory", "std::bad_alloc", "Cannot allocate memory")


def failure_category(e: BaseException, unknown: str = CRASH) -> str:
    """The failure category of an exception (one of :data:`CATEGORIES`).

    Args:
        e: what was raised.
        unknown: the category of an exception none of the rules name; describing
            a listing entry passes ``failed-corrupt`` (its card or config is bad).
    """
    if isinstance(e, (ResourceLimitError, MemoryError)):
        return RESOURCE_LIMIT
    if isinstance(e, UnsafeCheckpointError):
        return REFUSED_UNSAFE
    if isinstance(e, TimeoutError):
        return TIMEOUT
    if isinstance(e, HubError):
        return HUB_ERROR
    if isinstance(e, UnsupportedCheckpointError):
        return FAILED_UNSUPPORTED
    if isinstance(e, CheckpointError):
        return FAILED_CORRUPT
    if isinstance(e, RuntimeError) and any(m in str(e) for m in _ALLOC_FAILURES):
        return RESOURCE_LIMIT
    return unknown


def limits_of(e: BaseException) -> dict:
    """``{limit name: value}`` of a local-limit refusal, else ``{}``."""
    if isinstance(e, ResourceLimitError) and e.limit:
        return {e.limit: e.value}
    return {}
