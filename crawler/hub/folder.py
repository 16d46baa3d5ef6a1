"""A folder laid out like a hub (``ROOT/<owner>/<name>/<files>``): the repos as the Hub would describe them.

:class:`HubFolder` derives what the Hub reports for each repo: a commit sha
from the files' names and contents (:func:`repo_sha`; editing a file changes
it), LFS or git-blob hashes per file, card data, tags, and ``pipeline_tag``
and ``library_name`` inferred from the files and config as the Hub does
(through the format registry: a transformers ``*ForImageClassification``
config is ``image-classification``, a config with ``auto_map`` is tagged
``custom_code``). :class:`DirSource` lists such a folder directly, and
:mod:`crawler.hub.server` serves it over HTTP; both read it here, so they agree.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from crawler.cards import split_front_matter
from crawler.hub.http import WeightsTooLargeError, fmt_bytes, git_blob_sha1, verify
from crawler.hub.source import SORT_ALIASES, HubModel, ModelSource, entry_failure, failed_entry, valid_repo_id
from plugin.core.errors import CheckpointError, ConfigError, HubError
from plugin.models import formats
from plugin.models.checkpoint import sha256_file
from plugin.models.hub_layout import CONFIG, README, parse_config_text
from plugin.models.limits import MAX_CARD_BYTES, ResourceLimitError
from plugin.outcomes import FAILED_CORRUPT

log = logging.getLogger(__name__)

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".keras", ".msgpack", ".onnx", ".pkl", ".npz",
                ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files are LFS whatever their suffix


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
    config: dict | None = None

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def file(self, path: str) -> RepoFile | None:
        return next((f for f in self.files if f.path == path), None)


def repo_sha(files: Iterable[RepoFile]) -> str:
    """A 40-hex commit id that changes whenever a file name or content changes."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()[:40]


def iso_time(when: float | datetime) -> str:
    """The Hub's time format, e.g. ``2024-05-01T12:00:00.000Z``, from a timestamp or datetime."""
    dt = datetime.fromtimestamp(when, timezone.utc) if isinstance(when, (int, float)) else when.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
        if not valid_repo_id(repo_id, owner=True):
            return None
        d = self.root / repo_id
        return d if d.is_dir() and d.resolve().is_relative_to(self.root) else None

    def repo_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(f"{o.name}/{n.name}" for o in self.root.iterdir()
                      if o.is_dir() and valid_repo_id(f"{o.name}/x", owner=True)
                      for n in o.iterdir() if n.is_dir() and valid_repo_id(f"{o.name}/{n.name}", owner=True))

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
            oid = "" if lfs else git_blob_sha1(path)
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
                oid = git_blob_sha1(RepoFile(rel, st.st_size, sha256, "", True).lfs_pointer())
            files.append(RepoFile(rel, st.st_size, sha256, oid, lfs))
            newest = max(newest, st.st_mtime)
        card_data, config, tags, pipeline, library = self._describe(d, {f.path for f in files})
        return LocalRepo(repo_id, repo_sha(files), iso_time(newest), tuple(files), tags, pipeline, library, card_data,
                         config)

    @staticmethod
    def _describe(d: Path, names: set[str]):
        """Card data, config, tags, pipeline tag and library, derived as the Hub does."""
        meta: dict = {}
        if README in names:
            with open(d / README, "rb") as fh:  # only the head: card data lives in the front matter
                head = fh.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")
            meta = split_front_matter(head).meta or {}
        config: dict | None = None
        if CONFIG in names:
            try:
                config = parse_config_text((d / CONFIG).read_text(encoding="utf-8", errors="replace"))
            except (CheckpointError, ResourceLimitError):
                config = None  # a broken config is the loader's problem, not the listing's
        found = formats.detect(names, config)
        library = meta.get("library_name") if isinstance(meta.get("library_name"), str) else found.library
        pipeline = meta.get("pipeline_tag") if isinstance(meta.get("pipeline_tag"), str) else None
        pipeline = pipeline or found.pipeline_tag
        tags: list[str] = []
        raw = meta.get("tags")
        tags += [str(t) for t in (raw if isinstance(raw, list) else [raw] if raw else [])]
        tags += [t for t in (library, pipeline, found.format if found.supported else None) if t]
        if config and "auto_map" in config:
            tags.append("custom_code")  # as the Hub tags repos that ship their own modelling code
        if any(n.endswith(".safetensors") for n in names):
            tags.append("safetensors")
        for key, prefix in (("datasets", "dataset:"), ("license", "license:"), ("base_model", "base_model:")):
            raw = meta.get(key)
            tags += [prefix + str(v) for v in (raw if isinstance(raw, list) else [raw] if raw else [])]
        return (meta or None), config, tuple(dict.fromkeys(tags)), pipeline, library

    def query(self, filters: Iterable[str] = (), author: str | None = None, search: str | None = None,
              sort: str | None = None, direction: int = -1, pipeline_tag: str | None = None) -> list[LocalRepo]:
        """Repos matching every filter tag, the pipeline tag, the author and the id substring.

        Sorted by id, or by ``sort`` (``lastModified``/``createdAt``; counters
        such as downloads are all zero here) in ``direction`` (-1 = descending).
        """
        repos = self.repos()
        wanted = [f for f in filters if f]
        repos = [r for r in repos if all(t in r.tags or t == r.library_name for t in wanted)]
        if pipeline_tag:
            repos = [r for r in repos if r.pipeline_tag == pipeline_tag]
        if author:
            repos = [r for r in repos if r.author.lower() == author.lower()]
        if search:
            repos = [r for r in repos if search.lower() in r.repo_id.lower()]
        if sort in ("lastModified", "createdAt"):
            repos.sort(key=lambda r: (r.last_modified, r.repo_id), reverse=direction < 0)
        elif sort == "id":
            repos.sort(key=lambda r: r.repo_id, reverse=direction < 0)
        return repos


class DirSource(ModelSource):
    """Repos in a local folder laid out like a hub (``owner/name/files``).

    Shas and tags are computed exactly as :mod:`crawler.hub.server` reports
    them, so the same folder listed directly or served over HTTP agrees. It
    takes the HF source's listing options (``pipeline_tag``, ``library``).
    """

    def __init__(self, path: str | Path, filter: str | list[str] | None = None, author: str | None = None,  # noqa: A002
                 search: str | None = None, limit: int | None = None, sort: str | None = None, name: str | None = None,
                 timeout_s: float | None = None, read_timeout_s: float | None = None,
                 pipeline_tag: str | None = None, library: str | list[str] | None = None):
        self.folder = HubFolder(path)
        if not self.folder.root.is_dir():
            raise ConfigError(f"model folder not found: {path}")
        self.filters = [filter] if isinstance(filter, str) else list(filter or [])
        self.author, self.search, self.limit = author, search, limit
        self.sort = SORT_ALIASES.get(sort or "", sort)
        self.pipeline_tag = pipeline_tag
        self.libraries = [library] if isinstance(library, str) else list(library or [])
        self.name = name or f"dir:{path}"
        self.timeout_s = timeout_s

    def list_models(self) -> Iterator[HubModel]:
        repos = self.folder.query(self.filters, self.author, self.search, self.sort, pipeline_tag=self.pipeline_tag)
        if self.libraries:
            repos = [r for r in repos if r.library_name in self.libraries]
        for repo in repos[: self.limit] if self.limit is not None else repos:
            yield self._describe(repo)
        # A repo the folder could not describe is reported as an entry, not dropped.
        for repo_id, why in sorted(self.folder.broken.items()):
            if not self.search or self.search.lower() in repo_id.lower():
                yield failed_entry(repo_id, "", f"repo could not be described: {why}", FAILED_CORRUPT, self.name)

    def _describe(self, repo: LocalRepo) -> HubModel:
        """The listing record, with the README read under the card cap (the config is the folder's)."""
        d = self.folder.root / repo.repo_id
        card, error, category, limit = None, "", "", None
        try:
            if repo.file(README) is not None:
                with open(d / README, "rb") as fh:
                    raw = fh.read(MAX_CARD_BYTES + 1)
                if len(raw) > MAX_CARD_BYTES:
                    raise WeightsTooLargeError(f"{repo.repo_id}: {README} is over the {fmt_bytes(MAX_CARD_BYTES)} "
                                               f"cap for a card", "max_card_bytes", MAX_CARD_BYTES)
                card = raw.decode("utf-8", errors="replace")
        except Exception as e:  # noqa: BLE001 - one entry never stops the listing
            category, limit = entry_failure(e)
            error = f"{type(e).__name__}: {e}"
        problems = ()
        if repo.config is None and repo.file(CONFIG) is not None:
            try:
                parse_config_text((d / CONFIG).read_text(encoding="utf-8", errors="replace"))
            except (CheckpointError, ResourceLimitError) as e:
                problems = (str(e),)
        return HubModel(repo.repo_id, repo.sha, repo.last_modified, tuple((f.path, f.size) for f in repo.files),
                        repo.tags, repo.pipeline_tag, card_text=card, config=repo.config, card_data=repo.card_data,
                        library_name=repo.library_name, source=self.name, problems=problems, error=error,
                        category=category, limit=limit)

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
                    raise WeightsTooLargeError(f"{what}: over the {fmt_bytes(max_bytes)} cap", "max_bytes", max_bytes)
                h.update(block)
                out.write(block)
        return verify(dest, f.sha256, h.hexdigest(), what)
