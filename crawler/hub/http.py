"""The one HTTP seam of the crawler: capped, timed, retried requests to a hub, and one error translation.

Requests go through ``huggingface_hub``'s shared session and headers. Error
answers are classified by ``huggingface_hub.utils.hf_raise_for_status`` (the
client's own reading of the Hub's ``X-Error-Code`` headers), then turned into
our :class:`~plugin.core.errors.HubError` family in :func:`hub_errors`, the
only place that knows the client's exception types. Around that: a read
timeout per request, a deadline per job, byte caps counted on what arrives,
and 429/5xx retries that honour ``Retry-After`` and the ``RateLimit`` header
within a bounded total wait. Hashes: the Hub's ETag of a file is its LFS
sha256 or its git blob sha1 (:func:`git_blob_sha1`, the one implementation).
"""
from __future__ import annotations

import email.utils
import hashlib
import re
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from plugin.core.errors import CheckpointError, HubError
from plugin.models.limits import ResourceLimitError

READ_TIMEOUT_S = 30.0
MAX_RETRY_WAIT_S = 30.0  # the most one request sleeps on Retry-After/RateLimit, in total
MAX_ATTEMPTS = 4
MAX_ERROR_BODY = 64 * 2**10
_HEX = re.compile(r"^[0-9a-f]+$")
_RATELIMIT_RESET = re.compile(r"(?:^|[;,\s])t=(\d+)")


class WeightsTooLargeError(ResourceLimitError, CheckpointError):
    """A file is over the download cap; nothing beyond the cap was downloaded."""

    def __init__(self, message: str, limit: str = "max_bytes", value: int | None = None):
        ResourceLimitError.__init__(self, message, limit, value)


class HashMismatchError(HubError):
    """The bytes received do not hash to what the hub said they are (a transport fault, retried)."""


class FetchTimeoutError(HubError, TimeoutError):
    """A listing page or a fetch ran past its deadline, or a read stalled past the read timeout."""


class ListingError(HubError):
    """The listing itself failed; entries already yielded stand.

    Attributes:
        cursor: the URL of the first page not listed, to resume from (None when resuming makes no sense).
    """

    def __init__(self, message: str, cursor: str | None = None):
        super().__init__(message + (f"; resume from {cursor[:300]}" if cursor else ""))
        self.cursor = cursor


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


@contextmanager
def hub_errors(what: str):
    """Translates ``huggingface_hub`` and ``httpx`` errors into :class:`HubError`; ``what`` names the request."""
    import httpx2
    from huggingface_hub import errors as hf

    try:
        yield
    except hf.GatedRepoError as e:
        raise HubError(f"{what}: repository is gated or private ({_first_line(e)})") from e
    except hf.RepositoryNotFoundError as e:
        raise HubError(f"{what}: repository not found ({_first_line(e)})") from e
    except hf.RevisionNotFoundError as e:
        raise HubError(f"{what}: revision not found; the repo changed since it was listed ({_first_line(e)})") from e
    except hf.LocalEntryNotFoundError as e:  # the download failed and the cache had nothing either
        raise HubError(f"{what}: hub unreachable and not in the local cache ({_first_line(e)})") from e
    except hf.EntryNotFoundError as e:
        raise HubError(f"{what}: file not found in the repo ({_first_line(e)})") from e
    except (hf.HfHubHTTPError, hf.FileMetadataError, hf.OfflineModeIsEnabled, hf.HFValidationError) as e:
        raise HubError(f"{what}: {_first_line(e)}") from e
    except httpx2.TimeoutException as e:
        raise FetchTimeoutError(f"{what}: no data within the read timeout ({type(e).__name__})") from e
    except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError) as e:
        raise HubError(f"{what}: hub unreachable ({type(e).__name__}: {e})") from e


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(e).__name__
    return re.sub(r"[^\x20-\x7e]", "?", text)[:400]


def raise_for_status(r, what: str) -> None:
    """Raises the :class:`HubError` for an error answer, as ``huggingface_hub`` reads it.

    The streamed body is read up to :data:`MAX_ERROR_BODY` only, so a hostile
    error page costs nothing; the client's classifier sees a copy with that body.
    """
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    body = b""
    try:
        for chunk in r.iter_raw():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
    except httpx2.HTTPError:
        pass  # the status and headers are enough to classify
    copy = httpx2.Response(r.status_code, headers=[(k, v) for k, v in r.headers.items()
                                                   if k.lower() not in ("content-length", "content-encoding")],
                           content=body[:MAX_ERROR_BODY], request=r.request)
    with hub_errors(what):
        hf_raise_for_status(copy)
    raise HubError(f"{what}: HTTP {r.status_code}")  # hf_raise_for_status raises for every status >= 400


def retry_wait(headers) -> float | None:
    """Seconds the hub asks us to wait: ``Retry-After`` (seconds or a date), else ``RateLimit``'s ``t=``."""
    value = (headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return float(value)
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    m = _RATELIMIT_RESET.search(headers.get("RateLimit") or "")  # e.g. '"api";r=0;t=55' (IETF draft, the Hub's)
    return float(m.group(1)) if m else None


def url_key(url: str) -> tuple:
    """A page URL with its query sorted: the same page however its Link was spelled."""
    u = urlsplit(url)
    return (u.scheme.lower(), u.netloc.lower(), u.path.rstrip("/"), tuple(sorted(parse_qsl(u.query, True))))


def etag_of(value: str | None) -> str:
    v = (value or "").strip()
    if v.startswith("W/"):
        v = v[2:]
    return v.strip('"').lower()


def git_blob_sha1(data: bytes | Path) -> str:
    """The git blob id of bytes or of a file's content (what the Hub's ETag is for a non-LFS file)."""
    if isinstance(data, (bytes, bytearray)):
        return hashlib.sha1(b"blob %d\0" % len(data) + bytes(data)).hexdigest()
    h = hashlib.sha1(b"blob %d\0" % Path(data).stat().st_size)
    with open(data, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, etag: str, sha256: str, what: str) -> bool:
    """True when ``etag`` (an LFS sha256 or a git blob sha1) matches the bytes; raises on a mismatch."""
    if len(etag) == 64 and _HEX.match(etag):
        if etag != sha256:
            raise HashMismatchError(f"{what}: sha256 {sha256[:12]}... is not the hub's {etag[:12]}...; "
                                    f"corrupted in transit, retried on a later scan")
        return True
    if len(etag) == 40 and _HEX.match(etag):
        got = git_blob_sha1(path)
        if etag != got:
            raise HashMismatchError(f"{what}: git blob sha1 {got[:12]}... is not the hub's {etag[:12]}...; "
                                    f"corrupted in transit, retried on a later scan")
        return True
    return False  # no usable hash: the bytes are kept, but no verdict on them is permanent


class HubHTTP:
    """Requests to one hub with a token, a per-job deadline, a read timeout and bounded retries.

    Args:
        token: a Hub token, False for none, None for the client's default.
        timeout_s: deadline of one job (a listing page, describing or fetching one model).
        read_timeout_s: abort a request that sends nothing for this long.
        max_retry_wait_s: the most one request sleeps on ``Retry-After``/``RateLimit``, in total.
    """

    def __init__(self, token: str | bool | None = None, timeout_s: float | None = None,
                 read_timeout_s: float = READ_TIMEOUT_S, max_retry_wait_s: float = MAX_RETRY_WAIT_S):
        self.token = token
        self.timeout_s, self.read_timeout_s, self.max_retry_wait_s = timeout_s, read_timeout_s, max_retry_wait_s

    def deadline(self) -> float | None:
        return time.monotonic() + self.timeout_s if self.timeout_s else None

    @contextmanager
    def request(self, method: str, url: str, what: str, *, deadline: float | None = None,
                follow_redirects: bool = True):
        """A streamed response with a status below 400.

        429 and 5xx answers are retried after the wait the hub asks for (else a
        short backoff) when it fits in the bounded total wait and the deadline;
        otherwise the request fails at once instead of stalling the scan.
        """
        import httpx2
        from huggingface_hub.utils import build_hf_headers, get_session

        waited = 0.0
        for attempt in range(MAX_ATTEMPTS):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise FetchTimeoutError(f"{what}: past the {self.timeout_s:g} s deadline")
            read = self.read_timeout_s if left is None else max(0.1, min(self.read_timeout_s, left))
            wait = None
            with hub_errors(what):
                with get_session().stream(method, url, headers=build_hf_headers(token=self.token),
                                          timeout=httpx2.Timeout(read, connect=min(read, 10.0)),
                                          follow_redirects=follow_redirects) as r:
                    status = r.status_code
                    if status in (429, 500, 502, 503, 504) and attempt + 1 < MAX_ATTEMPTS:
                        wait = retry_wait(r.headers)
                        if wait is None:
                            wait = 0.5 * 2**attempt
                        budget = self.max_retry_wait_s - waited
                        if left is not None:
                            budget = min(budget, left - 0.1)
                        if wait > budget:
                            raise HubError(f"{what}: HTTP {status}, retry after {wait:g} s exceeds the bounded "
                                           f"wait ({max(0.0, budget):.0f} s left); retried on a later scan")
                    elif status >= 400:
                        raise_for_status(r, what)
                    else:
                        yield r
                        return
            time.sleep(wait)
            waited += wait
        raise HubError(f"{what}: the hub kept failing after {MAX_ATTEMPTS} attempts")

    def read(self, r, what: str, cap: int | None, deadline: float | None, sink=None,
             limit_name: str = "max_bytes") -> bytes:
        """Reads a body under ``cap`` bytes (counted as they arrive) and the deadline."""
        declared = r.headers.get("Content-Length")
        if cap is not None and declared and declared.isdigit() and int(declared) > cap:
            raise WeightsTooLargeError(f"{what}: {fmt_bytes(int(declared))} declared, over the "
                                       f"{fmt_bytes(cap)} cap; not downloaded", limit_name, cap)
        encoded = r.headers.get("Content-Encoding") not in (None, "identity")
        chunks, got = [], 0
        with hub_errors(what):
            # No chunk size: bytes are seen as they arrive, so a drip meets the deadline on time.
            for chunk in r.iter_bytes() if encoded else r.iter_raw():
                got += len(chunk)
                if cap is not None and got > cap:
                    raise WeightsTooLargeError(f"{what}: the hub sent more than the {fmt_bytes(cap)} cap "
                                               f"(declared {declared or 'no size'}); aborted", limit_name, cap)
                if deadline is not None and time.monotonic() > deadline:
                    raise FetchTimeoutError(f"{what}: still downloading at the {self.timeout_s:g} s deadline "
                                            f"({fmt_bytes(got)} so far)")
                if sink is None:
                    chunks.append(chunk)
                else:
                    sink(chunk)
        if not encoded and declared and declared.isdigit() and got != int(declared):
            raise HubError(f"{what}: truncated in transit ({got} of {declared} bytes)")
        return b"".join(chunks)
