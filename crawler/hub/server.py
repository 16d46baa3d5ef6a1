"""A loopback Hugging Face Hub: serves a folder of repos over the Hub's HTTP API.

The folder holds model repos in hub layout, ``ROOT/<owner>/<name>/<files>``.
The server speaks enough of the Hub API that the real ``huggingface_hub``
client (``HfApi.list_models``, ``model_info``, ``list_repo_tree``,
``hf_hub_download``, ``snapshot_download``) works against
``endpoint=http://127.0.0.1:PORT``, so the crawler is tested through the very
code path it uses on huggingface.co, with no network.

Repos have a single revision, ``main``, whose commit sha is derived from the
files' names and contents (:func:`repo_sha`): editing a file changes the sha,
and an older sha becomes unknown (``RevisionNotFound``), as a force-push would.
Weights files are presented as Git LFS files (ETag = sha256), other files as
plain git blobs (ETag = git blob sha1). No Xet headers are ever sent, so the
client downloads over plain HTTP.

The listing answers the Hub's parameters: ``filter`` (tags or library),
``pipeline_tag``, ``author``, ``search``, ``sort``/``direction``, ``limit``,
and ``expand`` (only the named fields, among them ``library_name``, ``tags``,
``siblings``, ``cardData`` and ``config``), or the older ``full``/``cardData``/
``config`` flags, which, as on the Hub, cannot be combined with ``expand``.

A mirror degrades per repo: a repo that cannot be described (an unreadable
file, a config over the limits...) is skipped and logged, the listing
reports it in the ``X-Skipped-Repos`` header, and every other repo is served.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from crawler.hub.folder import HubFolder, LocalRepo
from crawler.hub.source import SORT_KEYS, safe_relpath, valid_repo_id

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000  # what huggingface.co caps a page of /api/models at
EXPANDABLE = ("author", "cardData", "config", "createdAt", "downloads", "lastModified", "library_name", "likes",
              "pipeline_tag", "private", "sha", "siblings", "tags", "gated", "disabled", "usedStorage")


def _bool_param(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def model_json(repo: LocalRepo, card_data: bool = False, blobs: bool = False, config: bool = False,
               expand: list[str] | None = None) -> dict:
    """A repo as ``/api/models`` items and ``/api/models/{id}`` describe it; ``expand`` keeps only those fields."""
    siblings = []
    for f in repo.files:
        s: dict = {"rfilename": f.path}
        if blobs:
            s.update(size=f.size, blobId=f.git_oid)
            if f.lfs:
                s["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(f.lfs_pointer())}
        siblings.append(s)
    out = {"_id": repo.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.author, "sha": repo.sha,
           "lastModified": repo.last_modified, "createdAt": repo.last_modified, "private": False, "gated": False,
           "disabled": False, "downloads": 0, "likes": 0, "tags": list(repo.tags), "pipeline_tag": repo.pipeline_tag,
           "library_name": repo.library_name, "siblings": siblings}
    if card_data and repo.card_data is not None:
        out["cardData"] = repo.card_data
    if (config or expand) and repo.config is not None:
        out["config"] = repo.config
    if blobs or expand:
        out["usedStorage"] = sum(f.size for f in repo.files)
    if expand:
        if repo.card_data is not None:
            out["cardData"] = repo.card_data
        out = {k: v for k, v in out.items() if k in ("_id", "id") or k in expand}
    return out


class _HubError(Exception):
    """An API error answer: status, X-Error-Code, message."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: huggingface_hub reuses connections
    server_version = "domain-finder-hub/1"
    timeout = 60  # an idle keep-alive connection frees its thread after this

    @property
    def hub(self) -> HubFolder:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing -----------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json",
              length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, headers: dict | None = None) -> None:
        self._send(200, json.dumps(obj).encode(), headers)

    def _error(self, e: _HubError) -> None:
        # Paths in messages come from the URL: keep CR/LF and non-ASCII out of the header.
        headers = {"X-Error-Message": re.sub(r"[^\x20-\x7e]", "?", e.message)}
        if e.code:
            headers["X-Error-Code"] = e.code
        if e.commit:
            headers["X-Repo-Commit"] = e.commit
        self._send(e.status, json.dumps({"error": e.message}).encode(), headers)

    def _route(self) -> None:
        self.server.request_log.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        # Split before decoding: a revision or tree path may hold an encoded "/".
        segs = [unquote(s) for s in url.path.split("/")[1:]]
        try:
            if self.command == "GET" and segs[:2] == ["api", "models"]:
                if len(segs) == 2:
                    return self._list_models(params)
                if len(segs) >= 4:
                    repo = self._repo(f"{segs[2]}/{segs[3]}")
                    rest = segs[4:]
                    if not rest:
                        return self._model_info(repo, "main", params)
                    if rest[0] == "revision" and len(rest) == 2:
                        return self._model_info(repo, rest[1], params)
                    if rest[0] == "tree" and len(rest) >= 2:
                        return self._tree(repo, rest[1], "/".join(rest[2:]), params)
            elif len(segs) >= 5 and segs[2] == "resolve":
                repo = self._repo(f"{segs[0]}/{segs[1]}")
                return self._resolve(repo, segs[3], "/".join(segs[4:]))
            raise _HubError(404, None, f"no such endpoint: {self.command} {url.path}")
        except _HubError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as e:  # noqa: BLE001 - one broken repo answers 500; the server keeps serving
            log.warning("error serving %s: %s: %s", self.path, type(e).__name__, e)
            self._error(_HubError(500, None, f"{type(e).__name__}: {str(e)[:200]}"))

    do_GET = do_HEAD = _route

    # -- endpoints ----------------------------------------------------------
    def _repo(self, repo_id: str) -> LocalRepo:
        if not valid_repo_id(repo_id, owner=True):
            raise _HubError(400, None, f"invalid repo id {repo_id!r}")
        repo = self.hub.repo(repo_id)
        if repo is None:
            raise _HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return repo

    @staticmethod
    def _check_revision(repo: LocalRepo, rev: str) -> None:
        if rev not in ("main", repo.sha):
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _list_models(self, params: dict[str, list[str]]) -> None:
        sort = (params.get("sort") or [None])[-1]
        if sort is not None and sort not in SORT_KEYS:
            raise _HubError(400, None, f"invalid sort {sort!r}; expected one of {sorted(SORT_KEYS)}")
        try:
            direction = int((params.get("direction") or ["-1"])[-1])
            limit = int(params["limit"][-1]) if params.get("limit") else None
            cursor = int((params.get("cursor") or ["0"])[-1])
        except ValueError as e:
            raise _HubError(400, None, f"bad integer parameter ({e})") from e
        repos = self.hub.query(params.get("filter", []), (params.get("author") or [None])[-1],
                               (params.get("search") or [None])[-1], sort, direction,
                               pipeline_tag=(params.get("pipeline_tag") or [None])[-1])
        page_size = max(1, min(limit or self.server.page_size, self.server.page_size))  # type: ignore[attr-defined]
        page = repos[cursor:cursor + page_size]
        expand = [e for v in params.get("expand", []) for e in v.split(",") if e]
        unknown = [e for e in expand if e not in EXPANDABLE]
        if unknown:
            raise _HubError(400, None, f"invalid expand {unknown[0][:40]!r}; expected one of {list(EXPANDABLE)}")
        flags = [k for k in ("full", "cardData", "config") if _bool_param(params.get(k))]
        if expand and flags:  # the Hub refuses the mix too
            raise _HubError(400, None, f"expand cannot be combined with {flags[0]}")
        headers = {}
        broken = dict(self.hub.broken)
        if broken:
            # Reported, not hidden: how many repos the mirror could not describe, and which.
            headers["X-Skipped-Repos"] = re.sub(r"[^\x20-\x7e]", "?", f"{len(broken)}: " + ", ".join(sorted(broken))[:2000])
        if cursor + page_size < len(repos):
            # Like the Hub (and GitHub): the next page's absolute URL in a Link header.
            query = [(k, v) for k, vs in params.items() if k != "cursor" for v in vs]
            query.append(("cursor", str(cursor + page_size)))
            host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            headers["Link"] = f'<http://{host}/api/models?{urlencode(query)}>; rel="next"'
        self._json([model_json(r, card_data="cardData" in flags, config="config" in flags, expand=expand or None)
                    for r in page], headers)

    def _model_info(self, repo: LocalRepo, rev: str, params: dict[str, list[str]]) -> None:
        self._check_revision(repo, rev)
        self._json(model_json(repo, card_data=True, blobs=_bool_param(params.get("blobs")), config=True))

    def _tree(self, repo: LocalRepo, rev: str, path: str, params: dict[str, list[str]]) -> None:
        self._check_revision(repo, rev)
        prefix = ""
        if path:
            path = safe_relpath(path)
            if path is None:
                raise _HubError(400, None, "invalid path")
            prefix = path + "/"
            if not any(f.path.startswith(prefix) for f in repo.files):
                raise _HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", repo.sha)
        recursive = _bool_param(params.get("recursive"))
        entries, dirs = [], set()
        for f in repo.files:
            if not f.path.startswith(prefix):
                continue
            rel = f.path[len(prefix):].split("/")
            for i in range(1, len(rel) if recursive else min(2, len(rel))):
                dirs.add(prefix + "/".join(rel[:i]))
            if recursive or len(rel) == 1:
                e = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
                if f.lfs:
                    e["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.lfs_pointer())}
                entries.append(e)
        entries += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                    for d in sorted(dirs)]
        self._json(sorted(entries, key=lambda e: e["path"]))

    def _resolve(self, repo: LocalRepo, rev: str, path: str) -> None:
        self._check_revision(repo, rev)
        rel = safe_relpath(path)
        if rel is None:
            raise _HubError(400, None, f"invalid path {path!r}")
        f = repo.file(rel)
        if f is None:
            raise _HubError(404, "EntryNotFound", f"Entry not found: {rel}", repo.sha)
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.lfs:  # what the Hub sends along an LFS redirect; we serve the bytes directly
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        start, end, status = 0, f.size - 1, 200
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if rng and (rng.group(1) or rng.group(2)):
            if rng.group(1):
                start = int(rng.group(1))
                end = min(int(rng.group(2)), f.size - 1) if rng.group(2) else f.size - 1
            else:  # suffix range: the last N bytes
                start = max(0, f.size - int(rng.group(2)))
            if start > end or start >= f.size:
                self._send(416, b"", {**headers, "Content-Range": f"bytes */{f.size}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        length = end - start + 1
        path_on_disk = self.hub.root / repo.repo_id / rel
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path_on_disk, "rb") as fh:
            fh.seek(start)
            left = length
            while left > 0:
                block = fh.read(min(1 << 20, left))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)


Handler = _Handler  # public name for subclasses (fault injection in the tests)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # stop() must not wait for idle keep-alive connections

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-download is routine; keep it off stderr.
        log.debug("error serving %s", client_address, exc_info=True)


class HubServer:
    """A running loopback hub; stop it with :meth:`stop` or a ``with`` block.

    Attributes:
        url: the endpoint to hand to ``HfApi(endpoint=...)``.
        port: the bound port.
        request_log: ``"METHOD /path?query"`` of every request served, in order.
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, page_size: int = DEFAULT_PAGE_SIZE,
                 handler: type | None = None):
        self._server = _Server((host, port), handler or _Handler)
        self._server.hub = HubFolder(root)  # type: ignore[attr-defined]
        self._server.page_size = max(1, int(page_size))  # type: ignore[attr-defined]
        self._server.request_log = deque(maxlen=100_000)  # type: ignore[attr-defined]  # bounded for run_forever
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        # A short poll interval: stop() waits up to one interval for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hub-server-{self.port}", daemon=True)

    @property
    def root(self) -> Path:
        return self._server.hub.root  # type: ignore[attr-defined]

    @property
    def request_log(self) -> deque[str]:
        return self._server.request_log  # type: ignore[attr-defined]

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the socket; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    def __enter__(self) -> "HubServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_hub(root: str | Path, host: str = "127.0.0.1", port: int = 0, page_size: int = DEFAULT_PAGE_SIZE,
              handler: type | None = None) -> HubServer:
    """Serves ``root`` in a background thread; ``port=0`` picks a free port.

    Args:
        root: folder of ``<owner>/<name>/`` repos.
        host: interface to bind; keep the loopback default unless you mean it.
        port: TCP port, 0 for any free one.
        page_size: most items per ``/api/models`` page (a smaller ``limit`` wins).
        handler: a subclass of the request handler (the tests' faulty hub); None for the plain one.
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"hub folder not found: {root}")
    return HubServer(root, host, port, page_size, handler).start()


def run_forever(root: str | Path, host: str = "127.0.0.1", port: int = 8080, page_size: int = DEFAULT_PAGE_SIZE) -> None:
    """Serves ``root`` in the foreground until interrupted (``domain-finder serve-hub``)."""
    server = serve_hub(root, host, port, page_size)
    n = len(server._server.hub.repo_ids())  # type: ignore[attr-defined]
    print(f"Serving {n} repos from {server.root} at {server.url} (Ctrl-C to stop)", flush=True)
    print(f"  HfApi(endpoint={server.url!r}) or HF_ENDPOINT={server.url}", flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = ["Handler", "HubServer", "model_json", "run_forever", "serve_hub"]
