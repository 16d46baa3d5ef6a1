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
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from crawler.cards import split_front_matter
from plugin.core.errors import CheckpointError
from plugin.models.checkpoint import sha256_file
from plugin.models.hub_layout import parse_config_text
from plugin.models.limits import MAX_CARD_BYTES, ResourceLimitError

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000  # what huggingface.co caps a page of /api/models at
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".pkl", ".npz", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files are LFS whatever their suffix
SORT_KEYS = {"lastModified", "createdAt", "downloads", "likes", "trendingScore", "id"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo, with the hashes the Hub API reports."""

    path: str  # posix, relative to the repo root
    size: int
    sha256: str
    git_oid: str  # git blob sha1 (of the LFS pointer for LFS files, as on the Hub)
    lfs: bool

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def lfs_pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()


@dataclass(frozen=True)
class LocalRepo:
    """A repo folder as the Hub would describe it."""

    repo_id: str
    sha: str
    last_modified: str  # ISO 8601, UTC, e.g. 2024-05-01T12:00:00.000Z
    files: tuple[RepoFile, ...]
    tags: tuple[str, ...]
    pipeline_tag: str | None
    library_name: str | None
    card_data: dict | None

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def file(self, path: str) -> RepoFile | None:
        return next((f for f in self.files if f.path == path), None)


def valid_repo_id(repo_id: str) -> bool:
    """``owner/name`` with plain, non-hidden components (no traversal)."""
    parts = repo_id.split("/")
    return len(parts) == 2 and all(_NAME.match(p) and ".." not in p for p in parts)


def safe_relpath(path: str) -> str | None:
    """Normalises a path inside a repo; None when it could escape the repo."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return "/".join(parts)


def repo_sha(files: Iterable[RepoFile]) -> str:
    """A 40-hex commit id that changes whenever a file name or content changes."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()[:40]


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def iso_time(when: float | datetime) -> str:
    """The Hub's time format, e.g. ``2024-05-01T12:00:00.000Z``, from a timestamp or datetime."""
    dt = datetime.fromtimestamp(when, timezone.utc) if isinstance(when, (int, float)) else when.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _bool_param(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


class HubFolder:
    """Reads a hub-layout folder: repos, their files, shas, tags and card data.

    File hashes are cached by ``(path, size, mtime_ns)``, so serving a large
    repo many times hashes it once, and an edited file is re-hashed.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._hashes: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.broken: dict[str, str] = {}  # repo id -> why it was skipped, as of the latest listing

    def repo_dir(self, repo_id: str) -> Path | None:
        if not valid_repo_id(repo_id):
            return None
        d = self.root / repo_id
        return d if d.is_dir() and d.resolve().is_relative_to(self.root) else None

    def repo_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(f"{o.name}/{n.name}" for o in self.root.iterdir() if o.is_dir() and valid_repo_id(f"{o.name}/x")
                      for n in o.iterdir() if n.is_dir() and valid_repo_id(f"{o.name}/{n.name}"))

    def repos(self) -> list[LocalRepo]:
        """Every repo that can be described; the others are skipped, logged and kept in :attr:`broken`."""
        out, broken = [], {}
        for repo_id in self.repo_ids():
            try:
                r = self.repo(repo_id)
            except Exception as e:  # noqa: BLE001 - one broken repo must not hide the others
                broken[repo_id] = f"{type(e).__name__}: {str(e)[:300]}"
                log.warning("skipping repo %s: %s", repo_id, broken[repo_id])
                continue
            if r is not None:
                out.append(r)
        with self._lock:
            self.broken = broken
        return out

    def _hash(self, path: Path, size: int, mtime_ns: int, lfs: bool) -> tuple[str, str]:
        key = (str(path), size, mtime_ns)
        with self._lock:
            hit = self._hashes.get(key)
        if hit is None:
            sha256 = sha256_file(path)
            oid = "" if lfs else _git_blob_sha1(path.read_bytes())
            hit = (sha256, oid)
            with self._lock:
                self._hashes[key] = hit
        return hit

    def repo(self, repo_id: str) -> LocalRepo | None:
        """Describes one repo, or None if there is no such repo."""
        d = self.repo_dir(repo_id)
        if d is None:
            return None
        files, newest = [], 0.0
        for p in sorted(d.rglob("*")):
            rel = p.relative_to(d).as_posix()
            if any(part.startswith(".") for part in rel.split("/")) or not p.is_file():
                continue  # hidden files (caches, marker files) are not part of a repo
            if not p.resolve().is_relative_to(d.resolve()):
                continue  # a symlink out of the repo is never served
            st = p.stat()
            lfs = p.suffix.lower() in LFS_SUFFIXES or st.st_size >= LFS_MIN_SIZE
            sha256, oid = self._hash(p, st.st_size, st.st_mtime_ns, lfs)
            if lfs:  # the Hub's git oid of an LFS file is that of its pointer
                oid = _git_blob_sha1(RepoFile(rel, st.st_size, sha256, "", True).lfs_pointer())
            files.append(RepoFile(rel, st.st_size, sha256, oid, lfs))
            newest = max(newest, st.st_mtime)
        card_data, tags, pipeline, library = self._describe(d, {f.path for f in files})
        return LocalRepo(repo_id, repo_sha(files), iso_time(newest), tuple(files), tags, pipeline, library, card_data)

    @staticmethod
    def _describe(d: Path, names: set[str]) -> tuple[dict | None, tuple[str, ...], str | None, str | None]:
        """Card data, tags, pipeline tag and library, derived as the Hub does."""
        meta: dict = {}
        if "README.md" in names:
            with open(d / "README.md", "rb") as fh:  # only the head: card data lives in the front matter
                head = fh.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")
            meta = split_front_matter(head).meta or {}
        config: dict = {}
        if "config.json" in names:
            try:
                config = parse_config_text((d / "config.json").read_text(encoding="utf-8", errors="replace"))
            except (CheckpointError, ResourceLimitError):
                config = {}  # a broken config is the loader's problem, not the listing's
        is_timm = isinstance(config.get("architecture"), str)
        library = meta.get("library_name") if isinstance(meta.get("library_name"), str) else ("timm" if is_timm else None)
        pipeline = meta.get("pipeline_tag") if isinstance(meta.get("pipeline_tag"), str) else None
        if pipeline is None and is_timm:
            pipeline = "image-feature-extraction" if config.get("num_classes") == 0 else "image-classification"
        tags: list[str] = []
        raw = meta.get("tags")
        tags += [str(t) for t in (raw if isinstance(raw, list) else [raw] if raw else [])]
        tags += [t for t in (library, pipeline, "timm" if is_timm else None) if t]
        if any(n.endswith(".safetensors") for n in names):
            tags.append("safetensors")
        for key, prefix in (("datasets", "dataset:"), ("license", "license:")):
            raw = meta.get(key)
            tags += [prefix + str(v) for v in (raw if isinstance(raw, list) else [raw] if raw else [])]
        return (meta or None), tuple(dict.fromkeys(tags)), pipeline, library

    def query(self, filters: Iterable[str] = (), author: str | None = None, search: str | None = None,
              sort: str | None = None, direction: int = -1) -> list[LocalRepo]:
        """Repos matching every filter tag, the author and the id substring.

        Sorted by id, or by ``sort`` (``lastModified``/``createdAt``; counters
        such as downloads are all zero here) in ``direction`` (-1 = descending).
        """
        repos = self.repos()
        wanted = [f for f in filters if f]
        repos = [r for r in repos if all(t in r.tags or t == r.library_name for t in wanted)]
        if author:
            repos = [r for r in repos if r.author.lower() == author.lower()]
        if search:
            repos = [r for r in repos if search.lower() in r.repo_id.lower()]
        if sort in ("lastModified", "createdAt"):
            repos.sort(key=lambda r: (r.last_modified, r.repo_id), reverse=direction < 0)
        elif sort == "id":
            repos.sort(key=lambda r: r.repo_id, reverse=direction < 0)
        return repos


def model_json(repo: LocalRepo, card_data: bool = False, blobs: bool = False) -> dict:
    """A repo as ``/api/models`` items and ``/api/models/{id}`` describe it."""
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
    if blobs:
        out["usedStorage"] = sum(f.size for f in repo.files)
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
        if not valid_repo_id(repo_id):
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
                               (params.get("search") or [None])[-1], sort, direction)
        page_size = max(1, min(limit or self.server.page_size, self.server.page_size))  # type: ignore[attr-defined]
        page = repos[cursor:cursor + page_size]
        expand = params.get("expand", [])
        card = _bool_param(params.get("cardData")) or "cardData" in expand
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
        self._json([model_json(r, card_data=card) for r in page], headers)

    def _model_info(self, repo: LocalRepo, rev: str, params: dict[str, list[str]]) -> None:
        self._check_revision(repo, rev)
        self._json(model_json(repo, card_data=True, blobs=_bool_param(params.get("blobs"))))

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


__all__ = ["Handler", "HubFolder", "HubServer", "LocalRepo", "RepoFile", "iso_time", "model_json", "repo_sha", "run_forever",
           "safe_relpath", "serve_hub", "valid_repo_id"]
