"""The Hugging Face Hub as a model source: listing as the Hub is, capped and pinned fetches.

By default the listing asks for every image classifier, whatever its library
(``pipeline_tag=image-classification``); ``library`` narrows it
(``["timm", "transformers", "onnx"]``: one listing per library, since the
Hub's ``filter`` values are AND-ed). Each page asks the Hub to ``expand`` the
triage facts (``library_name``, ``tags``, ``siblings``, ``cardData``,
``config``...), so deciding a repo's format, whether it is an encoder and
whether it asks for remote code costs no request of its own; only a candidate
for an investigation has its README fetched. Hub data is hostile until validated:

* an entry whose repo id or sha breaks the Hub's grammar becomes an entry
  with ``category="invalid-repo"``, never a request or a filter string;
* one bad entry (its card, its config, its model info) never stops the
  listing: the entry carries ``error`` and ``category`` instead;
* a 429 is honoured (``Retry-After``, else the ``RateLimit`` header's reset)
  within a bounded wait; a page that still fails ends the listing with a
  :class:`~crawler.hub.http.ListingError` whose ``cursor`` resumes it
  (``HfSource(resume=cursor)``), so a long listing is never restarted from zero;
* pagination is capped, and a ``Link`` that points back to a page already
  fetched stops the listing;
* every file fetched is capped on the bytes received, every request has a
  read timeout and every job a deadline, and the bytes are verified against
  the hub's ETag. Only verified bytes can earn a permanent verdict.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

from crawler.hub.http import (MAX_RETRY_WAIT_S, READ_TIMEOUT_S, HashMismatchError, HubHTTP, ListingError, etag_of,
                              url_key, verify)
from crawler.hub.source import (SORT_ALIASES, HubModel, ModelSource, entry_failure, failed_entry, safe_relpath,
                                valid_repo_id, valid_sha)
from plugin.core.errors import CheckpointError, ConfigError, HubError
from plugin.models.hub_layout import CONFIG, README, parse_config_text
from plugin.models.limits import MAX_CARD_BYTES, MAX_CONFIG_BYTES, safe_json_loads
from plugin.outcomes import INVALID_REPO

MAX_PAGES = 10_000  # 10 M models at the Hub's 1,000 per page
MAX_PAGE_BYTES = 64 * 2**20
DEFAULT_PIPELINE = "image-classification"
LIBRARIES = ("timm", "transformers", "onnx")
EXPAND = ("sha", "lastModified", "pipeline_tag", "library_name", "tags", "siblings", "cardData", "config")


class HfSource(ModelSource):
    """Models on a Hugging Face Hub (huggingface.co or any compatible endpoint).

    Args:
        endpoint: hub URL; None means ``huggingface_hub``'s default.
        pipeline_tag: the task listed (default ``image-classification``; None lists every task).
        library: one library or several (each listed in turn); None for every library.
        author, search, limit, sort, filter: the rest of the listing query
            (``filter``: extra tags every model must carry; ``sort`` e.g. ``"last_modified"``).
        token: a Hub token, or None for anonymous access.
        name: what :attr:`HubModel.source` says.
        timeout_s: deadline for one listing page and for describing or fetching one model.
        read_timeout_s: abort a request that sends nothing for this long.
        max_retry_wait_s: the most one request sleeps on ``Retry-After``/``RateLimit``, in total.
        max_pages: stop the listing with an error after this many pages.
        resume: a :attr:`ListingError.cursor` to continue a listing that stopped.
    """

    def __init__(self, endpoint: str | None = None, author: str | None = None, search: str | None = None,
                 limit: int | None = None, sort: str | None = None, filter: str | list[str] | None = None,  # noqa: A002
                 token: str | None = None, name: str | None = None, timeout_s: float | None = None,
                 read_timeout_s: float = READ_TIMEOUT_S, max_retry_wait_s: float = MAX_RETRY_WAIT_S,
                 max_pages: int = MAX_PAGES, pipeline_tag: str | None = DEFAULT_PIPELINE,
                 library: str | list[str] | None = None, resume: str | None = None):
        from huggingface_hub import constants

        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.author, self.search, self.limit, self.sort = author, search, limit, sort
        self.filters = [filter] if isinstance(filter, str) else list(filter or [])
        self.pipeline_tag = pipeline_tag
        self.libraries = [library] if isinstance(library, str) else list(library or [])
        # Without an explicit token, a locally saved one goes to huggingface.co only, never to another endpoint.
        token = token or (None if self.endpoint is None else False)
        self.name = name or (f"hf:{self.endpoint}" if self.endpoint else "hf")
        self.base = self.endpoint or constants.ENDPOINT.rstrip("/")
        self.http = HubHTTP(token, timeout_s, read_timeout_s, max_retry_wait_s)
        if resume is not None and not resume.startswith(f"{self.base}/api/models?"):
            # A cursor is a URL we will send the token to: only this hub's own listing.
            raise ConfigError(f"resume cursor {resume[:200]!r} is not a listing of {self.base}")
        self.max_pages, self.resume = max_pages, resume
        self._meta: dict[tuple[str, str, str], tuple[int | None, str]] = {}

    # -- listing --------------------------------------------------------------
    def _params(self, library: str | None) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = [("filter", f) for f in (*self.filters, *([library] if library else []))]
        for k, v in (("pipeline_tag", self.pipeline_tag), ("author", self.author), ("search", self.search)):
            if v:
                params.append((k, v))
        if self.sort:
            params.append(("sort", SORT_ALIASES.get(self.sort, self.sort)))
        if self.limit is not None:
            params.append(("limit", str(self.limit)))
        return params + [("expand", e) for e in EXPAND]

    def _start_urls(self) -> list[str]:
        """One listing per library; a resumed listing starts at its cursor, then the libraries after it."""
        libs = self.libraries or [None]
        urls = [f"{self.base}/api/models?{urlencode(self._params(lib))}" for lib in libs]
        if not self.resume:
            return urls
        wanted = [f for f in parse_qs(urlsplit(self.resume).query).get("filter", []) if f not in self.filters]
        at = next((i for i, lib in enumerate(libs) if (lib is None and not wanted) or lib in wanted), 0)
        return [self.resume, *urls[at + 1:]]

    def list_models(self) -> Iterator[HubModel]:
        yielded = 0
        for start in self._start_urls():
            for model in self._pages(start):
                if self.limit is not None and yielded >= self.limit:
                    return
                yield model
                yielded += 1

    def _pages(self, url: str | None) -> Iterator[HubModel]:
        seen: set[tuple] = set()
        for page_no in range(self.max_pages + 1):
            if url is None:
                return
            if page_no == self.max_pages:
                raise ListingError(f"listing models: more than {self.max_pages} pages; stopped")
            seen.add(url_key(url))
            what = f"listing models (page {page_no + 1})"
            deadline = self.http.deadline()
            try:
                with self.http.request("GET", url, what, deadline=deadline) as r:
                    body = self.http.read(r, what, MAX_PAGE_BYTES, deadline, limit_name="max_page_bytes")
                    link = r.links.get("next", {}).get("url")
            except HubError as e:  # what was listed stands; the cursor resumes from this very page
                raise ListingError(str(e), cursor=url) from e
            try:
                page = safe_json_loads(body.decode("utf-8", errors="replace"), what, max_chars=MAX_PAGE_BYTES,
                                       max_depth=48, max_nodes=50_000_000)
            except ValueError as e:
                raise ListingError(f"{what}: not a JSON list of models ({str(e)[:200]})") from e
            if not isinstance(page, list):
                raise ListingError(f"{what}: expected a JSON list of models, got {type(page).__name__}")
            for item in page:
                yield self._entry(item)
            if link is not None:
                link = urljoin(url, link)
                if url_key(link) in seen:
                    raise ListingError(f"listing models: the Link header of page {page_no + 1} points back to a page "
                                       f"already fetched ({link[:200]}); pagination loop stopped")
            url = link

    def _entry(self, item) -> HubModel:
        """One listing entry, validated; never raises (a bad entry carries ``error`` and ``category``)."""
        if not isinstance(item, dict):
            return failed_entry(f"<entry {str(item)[:60]}>", "", "listing entry is not a JSON object", INVALID_REPO,
                                self.name)
        repo_id, sha = item.get("id", item.get("modelId")), item.get("sha")
        if not valid_repo_id(repo_id):
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
        text = {k: item.get(k) if isinstance(item.get(k), str) else None
                for k in ("pipeline_tag", "lastModified", "library_name")}
        stub = HubModel(repo_id, sha, text["lastModified"][:40] if text["lastModified"] else None, tuple(files),
                        tuple(str(t)[:200] for t in tags[:1000]), text["pipeline_tag"],
                        config=item["config"] if isinstance(item.get("config"), dict) else None,
                        card_data=item["cardData"] if isinstance(item.get("cardData"), dict) else None,
                        library_name=text["library_name"][:100] if text["library_name"] else None, source=self.name)
        return self._describe(stub)

    def _model_info(self, repo_id: str) -> dict:
        what = f"{repo_id}: model info"
        deadline = self.http.deadline()
        with self.http.request("GET", f"{self.base}/api/models/{repo_id}", what, deadline=deadline) as r:
            body = self.http.read(r, what, MAX_PAGE_BYTES, deadline, limit_name="max_page_bytes")
        info = safe_json_loads(body.decode("utf-8", errors="replace"), what, max_chars=MAX_PAGE_BYTES, max_depth=48,
                               max_nodes=5_000_000)
        if not isinstance(info, dict):
            raise HubError(f"{what}: not a JSON object")
        return info

    def _describe(self, stub: HubModel) -> HubModel:
        """Adds what triage needs beyond the listing: the config if the listing had none, the card of a candidate.

        A repo the format triage already settles (refused, unsupported, an
        encoder) costs no request; a failure to fetch either file fails the entry, with its category.
        """
        problems: list[str] = []
        card, config = None, stub.config
        deadline = self.http.deadline()
        try:
            if config is None and CONFIG in stub.filenames:
                text = self._small(stub, CONFIG, MAX_CONFIG_BYTES, "max_config_bytes", deadline)
                try:
                    config = parse_config_text(text.decode("utf-8", "replace"))
                except CheckpointError as e:  # the loader refuses it later, as a verdict on the file
                    problems.append(str(e))
            found = replace(stub, config=config).detected
            candidate = found.supported and not found.refused and not found.encoder
            if candidate and README in stub.filenames:
                card = self._small(stub, README, MAX_CARD_BYTES, "max_card_bytes", deadline).decode("utf-8", "replace")
        except Exception as e:  # noqa: BLE001 - one entry never stops the listing
            category, limit = entry_failure(e)
            return replace(stub, card_text=card, config=config, problems=tuple(problems),
                           error=f"{type(e).__name__}: {e}", category=category, limit=limit)
        return replace(stub, card_text=card, config=config, problems=tuple(problems))

    def _small(self, model: HubModel, filename: str, cap: int, limit_name: str, deadline: float | None) -> bytes:
        what = f"{model.repo_id}@{model.sha[:8]}: downloading {filename}"
        with self.http.request("GET", self._url(model, filename), what, deadline=deadline) as r:
            return self.http.read(r, what, cap, deadline, limit_name=limit_name)

    def _url(self, model: HubModel, filename: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(model.repo_id, filename, revision=model.sha, endpoint=self.base)

    # -- fetching -------------------------------------------------------------
    def _head(self, model: HubModel, filename: str) -> tuple[int | None, str]:
        """``(size, etag)`` from a HEAD at the pinned sha (the Hub's X-Linked-* headers for LFS files)."""
        key = (model.repo_id, model.sha, filename)
        if key not in self._meta:
            what = f"{model.repo_id}@{model.sha[:8]}: size of {filename}"
            with self.http.request("HEAD", self._url(model, filename), what, deadline=self.http.deadline(),
                               follow_redirects=False) as r:
                h = r.headers
                size = h.get("X-Linked-Size") or h.get("Content-Length")
                etag = etag_of(h.get("X-Linked-Etag") or h.get("ETag"))
            self._meta[key] = (int(size) if size and size.isdigit() else None, etag)
        return self._meta[key]

    def _size(self, model: HubModel, filename: str) -> int | None:
        size = model.size_of(filename)
        return size if size is not None else self._head(model, filename)[0]

    def _download(self, model: HubModel, filename: str, dest: Path, max_bytes: int | None = None,
                  deadline: float | None = None, **_) -> bool:
        size, etag = self._head(model, filename)
        if deadline is None:
            deadline = self.http.deadline()
        what = f"{model.repo_id}@{model.sha[:8]}: downloading {filename}"
        sha256 = hashlib.sha256()
        with open(dest, "wb") as fh:
            def sink(chunk: bytes) -> None:
                sha256.update(chunk)
                fh.write(chunk)
                if size is not None and fh.tell() > size:
                    raise HashMismatchError(f"{what}: the hub sent more than the {size} bytes it declared; aborted")

            with self.http.request("GET", self._url(model, filename), what, deadline=deadline) as r:
                self.http.read(r, what, max_bytes, deadline, sink)
        return verify(dest, etag, sha256.hexdigest(), what)
