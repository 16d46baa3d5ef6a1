"""Where the crawler finds models: the Hugging Face Hub, a folder, or the demo hub.

Every source lists :class:`HubModel` records lazily and fetches one model as a
timm hub-layout folder (``config.json`` + one weights file), pinned to the
commit it was listed at, and refusing oversized weights before downloading.
"""
from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from plugin.models.hub_layout import CONFIG, README, WEIGHTS_PREFERENCE, parse_config_text
from crawler.hub_server import HubFolder, LocalRepo, iso_time
from plugin.core.registry import Registry
from plugin.core.errors import CheckpointError, ConfigError, HubError, UnknownNameError



class WeightsTooLargeError(CheckpointError):
    """A weights file is over the download cap; nothing was downloaded."""


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

    @property
    def filenames(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.siblings)

    def size_of(self, filename: str) -> int | None:
        return next((size for name, size in self.siblings if name == filename), None)

    @property
    def weights_file(self) -> str | None:
        """The weights file :meth:`ModelSource.fetch` would download."""
        return next((n for n in WEIGHTS_PREFERENCE if n in self.filenames), None)


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
    def _download(self, model: HubModel, filename: str, dest: Path) -> None:
        """Copies one file at ``model.sha`` to ``dest``."""

    def fetch(self, model: HubModel, dest_dir: str | Path, max_bytes: int | None = None) -> Path:
        """Downloads ``config.json`` and one weights file into ``dest_dir``.

        ``model.safetensors`` is preferred over pickle files. Sizes are checked
        before any byte of weights is downloaded.

        Raises:
            CheckpointError: no config or no weights file in the repo.
            WeightsTooLargeError: a file is larger than ``max_bytes``.
            HubError: the source failed or the commit is gone.
        """
        names = model.filenames
        if CONFIG not in names:
            raise CheckpointError(f"{model.repo_id}@{model.sha[:8]}: no {CONFIG}; not a timm hub-layout repo")
        weights = model.weights_file
        if weights is None:
            raise CheckpointError(f"{model.repo_id}@{model.sha[:8]}: no weights file ({', '.join(WEIGHTS_PREFERENCE)})")
        files = (CONFIG, weights)
        if max_bytes is not None:
            for name in files:
                size = self._size(model, name)
                if size is None:
                    raise HubError(f"{model.repo_id}@{model.sha[:8]}: size of {name} unknown; refusing to download "
                                   f"it under a {_fmt_bytes(max_bytes)} cap")
                if size > max_bytes:
                    raise WeightsTooLargeError(f"{model.repo_id}@{model.sha[:8]}: {name} is {_fmt_bytes(size)}, over "
                                               f"the {_fmt_bytes(max_bytes)} cap; not downloaded")
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for name in files:
            self._download(model, name, dest / name)
        return dest

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
    except (httpx2.HTTPError, httpx2.InvalidURL) as e:
        raise HubError(f"{what}: hub unreachable ({type(e).__name__}: {e})") from e


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__


class HfSource(ModelSource):
    """Models on a Hugging Face Hub (huggingface.co or any compatible endpoint).

    Args:
        endpoint: hub URL; None means ``huggingface_hub``'s default.
        author, search, limit, sort, filter: passed to ``HfApi.list_models``
            (``filter`` defaults to ``"timm"``; ``sort`` e.g. ``"last_modified"``).
        token: a Hub token, or None for anonymous access.
        cache_dir: download cache; None uses ``HF_HUB_CACHE`` as set now.
        name: what :attr:`HubModel.source` says.
    """

    def __init__(self, endpoint: str | None = None, author: str | None = None, search: str | None = None,
                 limit: int | None = None, sort: str | None = None, filter: str | list[str] | None = "timm",  # noqa: A002
                 token: str | None = None, cache_dir: str | Path | None = None, name: str | None = None):
        from huggingface_hub import HfApi

        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.author, self.search, self.limit, self.sort, self.filter = author, search, limit, sort, filter
        # Without an explicit token, a locally saved one goes to huggingface.co only, never to another endpoint.
        self.token: str | bool | None = token or (None if self.endpoint is None else False)
        self.cache_dir = cache_dir
        self.name = name or (f"hf:{self.endpoint}" if self.endpoint else "hf")
        self.api = HfApi(endpoint=self.endpoint, token=self.token)

    def _cache(self) -> str | None:
        # huggingface_hub reads HF_HUB_CACHE once at import; honour the variable as it is now.
        return str(self.cache_dir) if self.cache_dir else os.environ.get("HF_HUB_CACHE")

    def _hf_download(self, model: HubModel, filename: str) -> Path:
        from huggingface_hub import hf_hub_download

        with hub_errors(f"{model.repo_id}@{model.sha[:8]}: downloading {filename}"):
            return Path(hf_hub_download(model.repo_id, filename, revision=model.sha, endpoint=self.endpoint,
                                        token=self.token, cache_dir=self._cache()))

    def list_models(self) -> Iterator[HubModel]:
        with hub_errors("listing models"):
            infos = self.api.list_models(filter=self.filter, author=self.author, search=self.search, limit=self.limit,
                                         sort=self.sort, full=True, cardData=True)
            it = iter(infos)
        while True:
            with hub_errors("listing models"):
                info = next(it, None)  # each next() may fetch a page
            if info is None:
                return
            yield self._describe(info)

    def _describe(self, info) -> HubModel:
        sha = info.sha
        siblings = info.siblings
        if sha is None or siblings is None:
            with hub_errors(f"{info.id}: model info"):
                full = self.api.model_info(info.id)
            sha, siblings = full.sha, full.siblings
        stub = HubModel(info.id, sha, iso_time(info.last_modified) if info.last_modified else None,
                        tuple((s.rfilename, s.size) for s in siblings or ()), tuple(info.tags or ()),
                        info.pipeline_tag, source=self.name)
        problems: list[str] = []
        card = config = None
        if README in stub.filenames:
            try:
                card = self._hf_download(stub, README).read_text(encoding="utf-8", errors="replace")
            except HubError as e:
                problems.append(str(e))
        if CONFIG in stub.filenames:
            try:
                config = parse_config_text(self._hf_download(stub, CONFIG).read_text(encoding="utf-8", errors="replace"))
            except (HubError, CheckpointError) as e:
                problems.append(str(e))
        return HubModel(stub.repo_id, stub.sha, stub.last_modified, stub.siblings, stub.tags, stub.pipeline_tag,
                        card, config, self.name, tuple(problems))

    def _size(self, model: HubModel, filename: str) -> int | None:
        size = model.size_of(filename)
        if size is not None:
            return size
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        # A HEAD request: the Hub's list endpoint gives names, not sizes.
        with hub_errors(f"{model.repo_id}@{model.sha[:8]}: size of {filename}"):
            url = hf_hub_url(model.repo_id, filename, revision=model.sha, endpoint=self.endpoint)
            return get_hf_file_metadata(url, token=self.token).size

    def _download(self, model: HubModel, filename: str, dest: Path) -> None:
        shutil.copyfile(self._hf_download(model, filename), dest)


class DirSource(ModelSource):
    """Repos in a local folder laid out like a hub (``owner/name/files``).

    Shas and tags are computed exactly as :mod:`crawler.hub_server` reports
    them, so the same folder listed directly or served over HTTP agrees.
    """

    def __init__(self, path: str | Path, filter: str | list[str] | None = None, author: str | None = None,  # noqa: A002
                 search: str | None = None, limit: int | None = None, sort: str | None = None, name: str | None = None):
        self.folder = HubFolder(path)
        if not self.folder.root.is_dir():
            raise ConfigError(f"model folder not found: {path}")
        self.filters = [filter] if isinstance(filter, str) else list(filter or [])
        self.author, self.search, self.limit = author, search, limit
        self.sort = {"last_modified": "lastModified", "created_at": "createdAt"}.get(sort or "", sort)
        self.name = name or f"dir:{path}"

    def list_models(self) -> Iterator[HubModel]:
        repos = self.folder.query(self.filters, self.author, self.search, self.sort)
        for repo in repos[: self.limit] if self.limit is not None else repos:
            yield self._describe(repo)

    def _describe(self, repo: LocalRepo) -> HubModel:
        d = self.folder.root / repo.repo_id
        names = {f.path for f in repo.files}
        problems: list[str] = []
        card = (d / README).read_text(encoding="utf-8", errors="replace") if README in names else None
        config = None
        if CONFIG in names:
            try:
                config = parse_config_text((d / CONFIG).read_text(encoding="utf-8", errors="replace"))
            except CheckpointError as e:
                problems.append(str(e))
        return HubModel(repo.repo_id, repo.sha, repo.last_modified, tuple((f.path, f.size) for f in repo.files),
                        repo.tags, repo.pipeline_tag, card, config, self.name, tuple(problems))

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

    def _download(self, model: HubModel, filename: str, dest: Path) -> None:
        repo = self._current(model)
        if repo.file(filename) is None:
            raise HubError(f"{model.repo_id}: {filename} not found")
        shutil.copyfile(self.folder.root / repo.repo_id / filename, dest)


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
