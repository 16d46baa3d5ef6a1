"""Where the crawler finds models: the Hugging Face Hub, a folder, or the demo hub.

Every source lists :class:`HubModel` records lazily and fetches one model as a
timm hub-layout folder (``config.json`` + one weights file), pinned to the
commit it was listed at. Hub data is hostile until validated:

* a listing entry whose repo id or sha breaks the Hub's grammar becomes an
  entry with ``category="invalid-repo"``, never a request or a filter string;
* one bad entry (its card, its config, its model info) never stops the
  listing: the entry carries ``error`` and ``category`` instead;
* pagination is capped, and a ``Link`` that points back to a page already
  fetched stops the listing with :class:`ListingError`;
* every file fetched, the card included, is capped on the bytes *received*
  (a size the hub claims is only a first check), every request has a read
  timeout and the whole fetch a deadline, ``Retry-After`` is honoured within a
  bounded total wait, and the bytes are verified against the hub's ETag (the
  LFS sha256, or the git blob sha1). Only verified bytes can earn a permanent
  verdict (:attr:`Fetched.verified`).
"""
from __future__ import annotations

import email.utils
import hashlib
import os
import re
import shutil
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from plugin.models.hub_layout import CONFIG, README, WEIGHTS_PREFERENCE, parse_config_text
from plugin.models.limits import MAX_CARD_BYTES, MAX_CONFIG_BYTES, ResourceLimitError, safe_json_loads
from crawler.hub_server import HubFolder, LocalRepo, iso_time, safe_relpath
from plugin.core.registry import Registry
from plugin.core.errors import CheckpointError, ConfigError, HubError, UnknownNameError
from plugin.tracking import FAILED_CORRUPT, HUB_ERROR, INVALID_REPO, RESOURCE_LIMIT, TIMEOUT  # the category schema


MAX_PAGES = 10_000  # 10 M models at the Hub's 1,000 per page
MAX_PAGE_BYTES = 64 * 2**20
READ_TIMEOUT_S = 30.0
MAX_RETRY_WAIT_S = 30.0  # the most a fetch sleeps on Retry-After, in total
MAX_ATTEMPTS = 4
_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_HEX = re.compile(r"^[0-9a-f]+$")


def valid_hub_repo_id(repo_id) -> bool:
    """The Hub's repo id grammar: ``[owner/]name``, ASCII letters, digits, ``-_.``, at most 96 characters.

    No ``--`` or ``..``, no leading or trailing ``-`` or ``.``, no ``.git`` suffix
    (as :func:`huggingface_hub.utils.validate_repo_id`, ASCII only).
    """
    if not isinstance(repo_id, str) or not 0 < len(repo_id) <= 96 or "--" in repo_id or ".." in repo_id:
        return False
    parts = repo_id.split("/")
    return len(parts) <= 2 and all(_REPO_PART.match(p) for p in parts) and not repo_id.endswith(".git")


def valid_sha(sha) -> bool:
    """A full git commit id: 40 lowercase hex digits."""
    return isinstance(sha, str) and bool(_SHA.match(sha))


class WeightsTooLargeError(ResourceLimitError, CheckpointError):
    """A file is over the download cap; nothing beyond the cap was downloaded."""

    def __init__(self, message: str, limit: str = "max_bytes", value: int | None = None):
        ResourceLimitError.__init__(self, message, limit, value)


class HashMismatchError(HubError):
    """The bytes received do not hash to what the hub said they are (a transport fault, retried)."""


class FetchTimeoutError(HubError, TimeoutError):
    """A listing page or a fetch ran past its deadline, or a read stalled past the read timeout."""


class ListingError(HubError):
    """The listing itself failed (a pagination loop, a malformed page); entries already yielded stand."""


@dataclass(frozen=True)
class HubModel:
    """A model repo as listed by a source, pinned to one commit.

    Attributes:
        repo_id: ``owner/name``.
        sha: the commit every file is fetched at.
        last_modified: ISO 8601 time of that commit, if known.
        siblings: ``(filename, size or None)``; list endpoints give no sizes.
        tags: the hub's tags (``timm``, ``image-classification``, ...).
        pipeline_tag: e.g. ``image-classification``.
        card_text: README.md's text, None when the repo has none.
        config: parsed config.json, None when missing or not a JSON object.
        source: name of the source that listed it (``hf``, ``dir:...``, ``demo``).
        problems: metadata that could not be read (the model is still listed).
        error: why this entry cannot be audited at all ("" when it can).
        category: the failure category of ``error`` (``invalid-repo``, ``hub-error``...).
        limit: ``(name, value)`` of the local limit behind a ``resource-limit`` error.
    """

    repo_id: str
    sha: str
    last_modified: str | None
    siblings: tuple[tuple[str, int | None], ...]
    tags: tuple[str, ...]
    pipeline_tag: str | None
    card_text: str | None = field(default=None, repr=False)
    config: dict | None = field(default=None, hash=False, compare=False, repr=False)
    source: str = ""
    problems: tuple[str, ...] = ()
    error: str = field(default="", compare=False)
    category: str = field(default="", compare=False)
    limit: tuple[str, float] | None = field(default=None, compare=False)

    @property
    def filenames(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.siblings)

    def size_of(self, filename: str) -> int | None:
        return next((size for name, size in self.siblings if name == filename), None)

    @property
    def weights_file(self) -> str | None:
        """The weights file :meth:`ModelSource.fetch` would download."""
        return next((n for n in WEIGHTS_PREFERENCE if n in self.filenames), None)


def failed_entry(repo_id, sha, error: str, category: str, source: str = "", limit=None) -> HubModel:
    """A listing entry that cannot be audited; ids are kept as text (truncated) for the record."""
    return HubModel(str(repo_id)[:200], str(sha if sha is not None else "")[:100], None, (), (), None,
                    source=source, error=error[:2000], category=category, limit=limit)


def entry_failure(e: BaseException) -> tuple[str, tuple[str, float] | None]:
    """The category and limit of an error met while describing an entry (an unknown one: a bad card or config)."""
    from plugin.outcomes import failure_category, limits_of

    return failure_category(e, unknown=FAILED_CORRUPT), next(iter(limits_of(e).items()), None)


@dataclass(frozen=True)
class Fetched:
    """A fetched folder, and whether every file's bytes were verified against the hub's hash."""

    folder: Path
    verified: bool


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


class ModelSource(ABC):
    """Lists models lazily and fetches one as a loadable folder."""

    name: str = ""

    @abstractmethod
    def list_models(self) -> Iterator[HubModel]:
        """Yields models one at a time; stopping early costs no further requests."""

    @abstractmethod
    def _size(self, model: HubModel, filename: str) -> int | None:
        """The file's size at ``model.sha``, asking the source if the listing had none."""

    @abstractmethod
    def _download(self, model: HubModel, filename: str, dest: Path, **limits) -> bool | None:
        """Copies one file at ``model.sha`` to ``dest``; True when its bytes were verified.

        ``limits`` are ``max_bytes`` (enforced on the bytes received) and
        ``deadline`` (a ``time.monotonic()`` value).
        """

    def fetch(self, model: HubModel, dest_dir: str | Path, max_bytes: int | None = None,
              deadline: float | None = None) -> Path:
        """Downloads ``config.json`` and one weights file into ``dest_dir`` (see :meth:`fetch_verified`)."""
        return self.fetch_verified(model, dest_dir, max_bytes, deadline).folder

    def fetch_verified(self, model: HubModel, dest_dir: str | Path, max_bytes: int | None = None,
                       deadline: float | None = None) -> Fetched:
        """Downloads ``config.json`` and one weights file into ``dest_dir``.

        ``model.safetensors`` is preferred over pickle files. Sizes are checked
        before any byte of weights is downloaded, and again on the bytes received.

        Raises:
            CheckpointError: no config or no weights file in the repo.
            WeightsTooLargeError: a file is larger than ``max_bytes``.
            HubError: the source failed or the commit is gone (``HashMismatchError``,
                ``FetchTimeoutError``: transient).
        """
        names = model.filenames
        if CONFIG not in names:
            raise CheckpointError(f"{model.repo_id}@{model.sha[:8]}: no {CONFIG}; not a timm hub-layout repo")
        weights = model.weights_file
        if weights is None:
            raise CheckpointError(f"{model.repo_id}@{model.sha[:8]}: no weights file ({', '.join(WEIGHTS_PREFERENCE)})")
        files = (CONFIG, weights)
        caps = {CONFIG: min(MAX_CONFIG_BYTES, max_bytes or MAX_CONFIG_BYTES), weights: max_bytes}
        if max_bytes is not None:
            for name in files:
                size = self._size(model, name)
                if size is None:
                    raise HubError(f"{model.repo_id}@{model.sha[:8]}: size of {name} unknown; refusing to download "
                                   f"it under a {_fmt_bytes(max_bytes)} cap")
                if size > max_bytes:
                    raise WeightsTooLargeError(f"{model.repo_id}@{model.sha[:8]}: {name} is {_fmt_bytes(size)}, over "
                                               f"the {_fmt_bytes(max_bytes)} cap; not downloaded", "max_bytes", max_bytes)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        verified = True
        for name in files:
            ok = self._download(model, name, dest / name, max_bytes=caps[name], deadline=deadline)
            verified = verified and bool(ok)
        return Fetched(dest, verified)

    def close(self) -> None:
        """Releases resources (servers, sessions); idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def hub_errors(what: str):
    """Translates ``huggingface_hub`` and ``httpx`` errors into :class:`HubError`.

    The one place where the client's exceptions are turned into ours;
    ``what`` says which request failed (e.g. ``"listing models"``).
    """
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
    return " ".join(lines[:2]) if lines else type(e).__name__


def _status_error(status: int, headers, what: str) -> HubError:
    """A hub error answer, translated from its status and the Hub's ``X-Error-*`` headers."""
    code = headers.get("X-Error-Code", "")
    msg = re.sub(r"[^\x20-\x7e]", "?", headers.get("X-Error-Message", ""))[:300]
    if code == "RepoNotFound" or (status == 404 and "Repository not found" in msg):
        return HubError(f"{what}: repository not found ({msg})")
    if code == "RevisionNotFound":
        return HubError(f"{what}: revision not found; the repo changed since it was listed ({msg})")
    if code == "EntryNotFound":
        return HubError(f"{what}: file not found in the repo ({msg})")
    if status in (401, 403) or code == "GatedRepo":
        return HubError(f"{what}: repository is gated or private (HTTP {status})")
    return HubError(f"{what}: HTTP {status}" + (f" ({msg})" if msg else ""))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when else None


def _url_key(url: str) -> tuple:
    """A page URL with its query sorted: the same page however its Link was spelled."""
    u = urlsplit(url)
    return (u.scheme.lower(), u.netloc.lower(), u.path.rstrip("/"), tuple(sorted(parse_qsl(u.query, True))))


def _etag(value: str | None) -> str:
    v = (value or "").strip()
    if v.startswith("W/"):
        v = v[2:]
    return v.strip('"').lower()


class HfSource(ModelSource):
    """Models on a Hugging Face Hub (huggingface.co or any compatible endpoint).

    Requests go through ``huggingface_hub``'s shared HTTP session, headers
    and URL builder; the listing's pages, retries and streams are driven here,
    so that every one of them is capped, timed and validated.

    Args:
        endpoint: hub URL; None means ``huggingface_hub``'s default.
        author, search, limit, sort, filter: the listing query
            (``filter`` defaults to ``"timm"``; ``sort`` e.g. ``"last_modified"``).
        token: a Hub token, or None for anonymous access.
        cache_dir: unused (fetches stream into the destination); kept for callers.
        name: what :attr:`HubModel.source` says.
        timeout_s: deadline for one listing page and for describing or fetching one model.
        read_timeout_s: abort a request that sends nothing for this long.
        max_retry_wait_s: the most one request sleeps on ``Retry-After``, in total.
        max_pages: stop the listing with an error after this many pages.
    """

    def __init__(self, endpoint: str | None = None, author: str | None = None, search: str | None = None,
                 limit: int | None = None, sort: str | None = None, filter: str | list[str] | None = "timm",  # noqa: A002
                 token: str | None = None, cache_dir: str | Path | None = None, name: str | None = None,
                 timeout_s: float | None = None, read_timeout_s: float = READ_TIMEOUT_S,
                 max_retry_wait_s: float = MAX_RETRY_WAIT_S, max_pages: int = MAX_PAGES):
        from huggingface_hub import HfApi, constants

        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.author, self.search, self.limit, self.sort, self.filter = author, search, limit, sort, filter
        # Without an explicit token, a locally saved one goes to huggingface.co only, never to another endpoint.
        self.token: str | bool | None = token or (None if self.endpoint is None else False)
        self.cache_dir = cache_dir
        self.name = name or (f"hf:{self.endpoint}" if self.endpoint else "hf")
        self.api = HfApi(endpoint=self.endpoint, token=self.token)
        self.base = self.endpoint or constants.ENDPOINT.rstrip("/")
        self.timeout_s, self.read_timeout_s = timeout_s, read_timeout_s
        self.max_retry_wait_s, self.max_pages = max_retry_wait_s, max_pages
        self._meta: dict[tuple[str, str, str], tuple[int | None, str]] = {}

    # -- HTTP -----------------------------------------------------------------
    def _deadline(self) -> float | None:
        return time.monotonic() + self.timeout_s if self.timeout_s else None

    @contextmanager
    def _request(self, method: str, url: str, what: str, *, params=None, deadline: float | None = None,
                 follow_redirects: bool = True):
        """A streamed response with a status below 400.

        429 and 5xx answers are retried: after ``Retry-After`` when it fits in
        the bounded total wait and the deadline, else the request fails at once
        instead of stalling the scan.
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
                with get_session().stream(method, url, params=params, headers=build_hf_headers(token=self.token),
                                          timeout=httpx2.Timeout(read, connect=min(read, 10.0)),
                                          follow_redirects=follow_redirects) as r:
                    status = r.status_code
                    if status in (429, 500, 502, 503, 504) and attempt + 1 < MAX_ATTEMPTS:
                        wait = _retry_after(r.headers.get("Retry-After"))
                        if wait is None:
                            wait = 0.5 * 2**attempt
                        budget = self.max_retry_wait_s - waited
                        if left is not None:
                            budget = min(budget, left - 0.1)
                        if wait > budget:
                            raise HubError(f"{what}: HTTP {status}, retry after {wait:g} s exceeds the bounded "
                                           f"wait ({max(0.0, budget):.0f} s left); retried on a later scan")
                    elif status >= 400:
                        raise _status_error(status, r.headers, what)
                    else:
                        yield r
                        return
            time.sleep(wait)
            waited += wait
        raise HubError(f"{what}: the hub kept failing after {MAX_ATTEMPTS} attempts")

    def _read(self, r, what: str, cap: int | None, deadline: float | None, sink=None,
              limit_name: str = "max_bytes") -> bytes:
        """Reads a body under ``cap`` bytes (counted as they arrive) and the deadline."""
        declared = r.headers.get("Content-Length")
        if cap is not None and declared and declared.isdigit() and int(declared) > cap:
            raise WeightsTooLargeError(f"{what}: {_fmt_bytes(int(declared))} declared, over the "
                                       f"{_fmt_bytes(cap)} cap; not downloaded", limit_name, cap)
        encoded = r.headers.get("Content-Encoding") not in (None, "identity")
        chunks, got = [], 0
        with hub_errors(what):
            # No chunk size: bytes are seen as they arrive, so a drip meets the deadline on time.
            for chunk in r.iter_bytes() if encoded else r.iter_raw():
                got += len(chunk)
                if cap is not None and got > cap:
                    raise WeightsTooLargeError(f"{what}: the hub sent more than the {_fmt_bytes(cap)} cap "
                                               f"(declared {declared or 'no size'}); aborted", limit_name, cap)
                if deadline is not None and time.monotonic() > deadline:
                    raise FetchTimeoutError(f"{what}: still downloading at the {self.timeout_s:g} s deadline "
                                            f"({_fmt_bytes(got)} so far)")
                if sink is None:
                    chunks.append(chunk)
                else:
                    sink(chunk)
        if not encoded and declared and declared.isdigit() and got != int(declared):
            raise HubError(f"{what}: truncated in transit ({got} of {declared} bytes)")
        return b"".join(chunks)

    def _url(self, model: HubModel, filename: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(model.repo_id, filename, revision=model.sha, endpoint=self.base)

    # -- listing --------------------------------------------------------------
    def _params(self) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        filters = [self.filter] if isinstance(self.filter, str) else list(self.filter or [])
        params += [("filter", f) for f in filters]
        for k, v in (("author", self.author), ("search", self.search)):
            if v:
                params.append((k, v))
        if self.sort:
            params.append(("sort", {"last_modified": "lastModified", "created_at": "createdAt",
                                    "trending_score": "trendingScore"}.get(self.sort, self.sort)))
        if self.limit is not None:
            params.append(("limit", str(self.limit)))
        return params + [("full", "True"), ("cardData", "True")]

    def list_models(self) -> Iterator[HubModel]:
        url: str | None = f"{self.base}/api/models?{urlencode(self._params())}"
        seen: set[tuple] = set()
        yielded = 0
        for page_no in range(self.max_pages + 1):
            if url is None:
                return
            if page_no == self.max_pages:
                raise ListingError(f"listing models: more than {self.max_pages} pages; stopped")
            seen.add(_url_key(url))
            what = f"listing models (page {page_no + 1})"
            deadline = self._deadline()
            with self._request("GET", url, what, deadline=deadline) as r:
                body = self._read(r, what, MAX_PAGE_BYTES, deadline, limit_name="max_page_bytes")
                link = r.links.get("next", {}).get("url")
            try:
                page = safe_json_loads(body.decode("utf-8", errors="replace"), what, max_chars=MAX_PAGE_BYTES,
                                       max_depth=48, max_nodes=50_000_000)
            except ValueError as e:
                raise ListingError(f"{what}: not a JSON list of models ({str(e)[:200]})") from e
            if not isinstance(page, list):
                raise ListingError(f"{what}: expected a JSON list of models, got {type(page).__name__}")
            for item in page:
                if self.limit is not None and yielded >= self.limit:
                    return
                yield self._entry(item)
                yielded += 1
            if link is not None:
                link = urljoin(url, link)
                if _url_key(link) in seen:
                    raise ListingError(f"listing models: the Link header of page {page_no + 1} points back to a page "
                                       f"already fetched ({link[:200]}); pagination loop stopped")
            url = link

    def _entry(self, item) -> HubModel:
        """One listing entry, validated; never raises (a bad entry carries ``error`` and ``category``)."""
        if not isinstance(item, dict):
            return failed_entry(f"<entry {str(item)[:60]}>", "", "listing entry is not a JSON object", INVALID_REPO,
                                self.name)
        repo_id, sha = item.get("id", item.get("modelId")), item.get("sha")
        if not valid_hub_repo_id(repo_id):
            return failed_entry(repo_id, sha, f"invalid repo id {str(repo_id)[:120]!r} (Hub grammar: [owner/]name, "
                                              f"letters, digits, -_. )", INVALID_REPO, self.name)
        siblings = item.get("siblings")
        try:
            if sha is None or siblings is None:
                full = self._model_info(repo_id)
                sha, siblings = full.get("sha"), full.get("siblings")
        except Exception as e:  # noqa: BLE001 - one entry never stops the listing
            category, limit = entry_failure(e)
            return failed_entry(repo_id, sha, f"{type(e).__name__}: {e}", category, self.name, limit)
        if not valid_sha(sha):
            return failed_entry(repo_id, sha, f"invalid commit sha {str(sha)[:60]!r} (expected 40 hex digits)",
                                INVALID_REPO, self.name)
        if not isinstance(siblings, list):
            return failed_entry(repo_id, sha, "siblings is not a list", INVALID_REPO, self.name)
        files = []
        for s in siblings:
            name = s.get("rfilename") if isinstance(s, dict) else None
            if not isinstance(name, str) or safe_relpath(name) is None:
                return failed_entry(repo_id, sha, f"invalid file name {str(name)[:80]!r} in the listing",
                                    INVALID_REPO, self.name)
            size = s.get("size")
            files.append((name, size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None))
        tags = item.get("tags") if isinstance(item.get("tags"), list) else []
        pipeline = item.get("pipeline_tag") if isinstance(item.get("pipeline_tag"), str) else None
        modified = item.get("lastModified") if isinstance(item.get("lastModified"), str) else None
        stub = HubModel(repo_id, sha, modified[:40] if modified else None, tuple(files),
                        tuple(str(t)[:200] for t in tags[:1000]), pipeline, source=self.name)
        return self._describe(stub)

    def _model_info(self, repo_id: str) -> dict:
        what = f"{repo_id}: model info"
        deadline = self._deadline()
        with self._request("GET", f"{self.base}/api/models/{repo_id}", what, deadline=deadline) as r:
            body = self._read(r, what, MAX_PAGE_BYTES, deadline, limit_name="max_page_bytes")
        info = safe_json_loads(body.decode("utf-8", errors="replace"), what, max_chars=MAX_PAGE_BYTES, max_depth=48,
                               max_nodes=5_000_000)
        if not isinstance(info, dict):
            raise HubError(f"{what}: not a JSON object")
        return info

    def _describe(self, stub: HubModel) -> HubModel:
        """Adds the card and the config; a failure to fetch either fails the entry, with its category."""
        problems: list[str] = []
        card = config = None
        deadline = self._deadline()
        try:
            if README in stub.filenames:
                card = self._small(stub, README, MAX_CARD_BYTES, "max_card_bytes", deadline).decode("utf-8", "replace")
            if CONFIG in stub.filenames:
                text = self._small(stub, CONFIG, MAX_CONFIG_BYTES, "max_config_bytes", deadline)
                try:
                    config = parse_config_text(text.decode("utf-8", "replace"))
                except CheckpointError as e:  # the loader refuses it later, as a verdict on the file
                    problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - one entry never stops the listing
            category, limit = entry_failure(e)
            return HubModel(stub.repo_id, stub.sha, stub.last_modified, stub.siblings, stub.tags, stub.pipeline_tag,
                            card, config, self.name, tuple(problems), f"{type(e).__name__}: {e}", category, limit)
        return HubModel(stub.repo_id, stub.sha, stub.last_modified, stub.siblings, stub.tags, stub.pipeline_tag,
                        card, config, self.name, tuple(problems))

    def _small(self, model: HubModel, filename: str, cap: int, limit_name: str, deadline: float | None) -> bytes:
        what = f"{model.repo_id}@{model.sha[:8]}: downloading {filename}"
        with self._request("GET", self._url(model, filename), what, deadline=deadline) as r:
            return self._read(r, what, cap, deadline, limit_name=limit_name)

    # -- fetching -------------------------------------------------------------
    def _head(self, model: HubModel, filename: str) -> tuple[int | None, str]:
        """``(size, etag)`` from a HEAD at the pinned sha (the Hub's X-Linked-* headers for LFS files)."""
        key = (model.repo_id, model.sha, filename)
        if key not in self._meta:
            what = f"{model.repo_id}@{model.sha[:8]}: size of {filename}"
            with self._request("HEAD", self._url(model, filename), what, deadline=self._deadline(),
                               follow_redirects=False) as r:
                h = r.headers
                size = h.get("X-Linked-Size") or h.get("Content-Length")
                etag = _etag(h.get("X-Linked-Etag") or h.get("ETag"))
            self._meta[key] = (int(size) if size and size.isdigit() else None, etag)
        return self._meta[key]

    def _size(self, model: HubModel, filename: str) -> int | None:
        size = model.size_of(filename)
        return size if size is not None else self._head(model, filename)[0]

    def _download(self, model: HubModel, filename: str, dest: Path, max_bytes: int | None = None,
                  deadline: float | None = None, **_) -> bool:
        size, etag = self._head(model, filename)
        if deadline is None:
            deadline = self._deadline()
        what = f"{model.repo_id}@{model.sha[:8]}: downloading {filename}"
        sha256 = hashlib.sha256()
        with open(dest, "wb") as fh:
            def sink(chunk: bytes) -> None:
                sha256.update(chunk)
                fh.write(chunk)
                if size is not None and fh.tell() > size:
                    raise HashMismatchError(f"{what}: the hub sent more than the {size} bytes it declared; aborted")

            with self._request("GET", self._url(model, filename), what, deadline=deadline) as r:
                self._read(r, what, max_bytes, deadline, sink)
        return _verify(dest, etag, sha256.hexdigest(), what)


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, etag: str, sha256: str, what: str) -> bool:
    """True when ``etag`` (an LFS sha256 or a git blob sha1) matches the bytes; raises on a mismatch."""
    if len(etag) == 64 and _HEX.match(etag):
        if etag != sha256:
            raise HashMismatchError(f"{what}: sha256 {sha256[:12]}... is not the hub's {etag[:12]}...; "
                                    f"corrupted in transit, retried on a later scan")
        return True
    if len(etag) == 40 and _HEX.match(etag):
        got = _git_blob_sha1(path)
        if etag != got:
            raise HashMismatchError(f"{what}: git blob sha1 {got[:12]}... is not the hub's {etag[:12]}...; "
                                    f"corrupted in transit, retried on a later scan")
        return True
    return False  # no usable hash: the bytes are kept, but no verdict on them is permanent


class DirSource(ModelSource):
    """Repos in a local folder laid out like a hub (``owner/name/files``).

    Shas and tags are computed exactly as :mod:`crawler.hub_server` reports
    them, so the same folder listed directly or served over HTTP agrees.
    """

    def __init__(self, path: str | Path, filter: str | list[str] | None = None, author: str | None = None,  # noqa: A002
                 search: str | None = None, limit: int | None = None, sort: str | None = None, name: str | None = None,
                 timeout_s: float | None = None, read_timeout_s: float | None = None):
        self.folder = HubFolder(path)
        if not self.folder.root.is_dir():
            raise ConfigError(f"model folder not found: {path}")
        self.filters = [filter] if isinstance(filter, str) else list(filter or [])
        self.author, self.search, self.limit = author, search, limit
        self.sort = {"last_modified": "lastModified", "created_at": "createdAt"}.get(sort or "", sort)
        self.name = name or f"dir:{path}"
        self.timeout_s = timeout_s

    def list_models(self) -> Iterator[HubModel]:
        repos = self.folder.query(self.filters, self.author, self.search, self.sort)
        for repo in repos[: self.limit] if self.limit is not None else repos:
            yield self._describe(repo)
        # A repo the folder could not describe is reported as an entry, not dropped.
        for repo_id, why in sorted(self.folder.broken.items()):
            if not self.search or self.search.lower() in repo_id.lower():
                yield failed_entry(repo_id, "", f"repo could not be described: {why}", FAILED_CORRUPT, self.name)

    def _describe(self, repo: LocalRepo) -> HubModel:
        d = self.folder.root / repo.repo_id
        names = {f.path for f in repo.files}
        problems: list[str] = []
        card = config = None
        siblings = tuple((f.path, f.size) for f in repo.files)
        try:
            if README in names:
                with open(d / README, "rb") as fh:
                    raw = fh.read(MAX_CARD_BYTES + 1)
                if len(raw) > MAX_CARD_BYTES:
                    raise WeightsTooLargeError(f"{repo.repo_id}: {README} is over the {_fmt_bytes(MAX_CARD_BYTES)} "
                                               f"cap for a card", "max_card_bytes", MAX_CARD_BYTES)
                card = raw.decode("utf-8", errors="replace")
            if CONFIG in names:
                try:
                    config = parse_config_text((d / CONFIG).read_text(encoding="utf-8", errors="replace"))
                except CheckpointError as e:
                    problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - one entry never stops the listing
            category, limit = entry_failure(e)
            return HubModel(repo.repo_id, repo.sha, repo.last_modified, siblings, repo.tags, repo.pipeline_tag,
                            card, config, self.name, tuple(problems), f"{type(e).__name__}: {e}", category, limit)
        return HubModel(repo.repo_id, repo.sha, repo.last_modified, siblings, repo.tags, repo.pipeline_tag,
                        card, config, self.name, tuple(problems))

    def _current(self, model: HubModel) -> LocalRepo:
        repo = self.folder.repo(model.repo_id)
        if repo is None:
            raise HubError(f"{model.repo_id}: repository not found in {self.folder.root}")
        if repo.sha != model.sha:
            raise HubError(f"{model.repo_id}: revision {model.sha[:8]} not found; the repo changed since it was listed "
                           f"(now {repo.sha[:8]})")
        return repo

    def _size(self, model: HubModel, filename: str) -> int | None:
        f = self._current(model).file(filename)
        return f.size if f else None

    def _download(self, model: HubModel, filename: str, dest: Path, max_bytes: int | None = None, **_) -> bool:
        repo = self._current(model)
        f = repo.file(filename)
        if f is None:
            raise HubError(f"{model.repo_id}: {filename} not found")
        what = f"{model.repo_id}@{model.sha[:8]}: copying {filename}"
        h, got = hashlib.sha256(), 0
        with open(self.folder.root / repo.repo_id / filename, "rb") as src, open(dest, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                got += len(block)
                if max_bytes is not None and got > max_bytes:
                    raise WeightsTooLargeError(f"{what}: over the {_fmt_bytes(max_bytes)} cap", "max_bytes", max_bytes)
                h.update(block)
                out.write(block)
        return _verify(dest, f.sha256, h.hexdigest(), what)


def _hf_factory(arg: str | None, **opts) -> ModelSource:
    return HfSource(endpoint=arg or opts.pop("endpoint", None), **opts)


def _dir_factory(arg: str | None, **opts) -> ModelSource:
    if not arg:
        raise ConfigError("model source 'dir' needs a folder: dir:PATH")
    return DirSource(arg, **opts)


SOURCES: Registry[Callable[..., ModelSource]] = Registry("model source", group="domain_finder.sources")
SOURCES.register("hf", _hf_factory)
SOURCES.register("dir", _dir_factory)
SOURCE_SPECS = ("hf", "hf:ENDPOINT", "dir:PATH", "demo", "demo:PATH")


def get_source(spec: str, **opts) -> ModelSource:
    """Creates a source from ``"hf"``, ``"hf:ENDPOINT"``, ``"dir:PATH"``, ``"demo"`` or ``"demo:PATH"``.

    ``demo:PATH`` builds and serves the demo hub in PATH instead of the cache
    (the demo source registers through the ``domain_finder.sources`` entry points).

    Keyword options go to the source's constructor (e.g. ``author``, ``limit``).

    Raises:
        UnknownNameError: the spec names no registered source.
        ConfigError: the spec lacks a required argument.
    """
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCES:
        raise UnknownNameError(f"unknown model source {spec!r}; valid: {', '.join(SOURCE_SPECS)}")
    return SOURCES.get(kind)(arg.strip() if sep else None, **opts)
