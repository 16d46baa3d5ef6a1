"""What every model source shares: the listing record, the Hub's naming rules, and the pinned, capped fetch.

A source lists :class:`HubModel` records lazily and fetches one model's
files, pinned to the commit it was listed at. Which files a fetch needs is
the model format's answer (:func:`plugin.models.formats.detect`, from the
file list and the config), so a timm, transformers or ONNX repo is fetched
the same way, and a repo that asks for remote code is never downloaded.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from crawler.hub.http import WeightsTooLargeError, fmt_bytes
from plugin.core.errors import CheckpointError, HubError
from plugin.models import formats
from plugin.models.limits import MAX_CONFIG_BYTES
from plugin.outcomes import FAILED_CORRUPT, failure_category, limits_of  # the one function that names a failure

_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
# The listing's sort keys, and the client's spellings of them (huggingface_hub's list_models).
SORT_KEYS = frozenset({"lastModified", "createdAt", "downloads", "likes", "trendingScore", "id"})
SORT_ALIASES = {"last_modified": "lastModified", "created_at": "createdAt", "trending_score": "trendingScore"}
SMALL_FILES = (formats.README, "config.json", formats.PREPROCESSOR, "model.safetensors.index.json")


def valid_repo_id(repo_id, owner: bool = False) -> bool:
    """The Hub's repo id grammar: ``[owner/]name``, ASCII letters, digits, ``-_.``, at most 96 characters.

    No ``--`` or ``..``, no leading or trailing ``-`` or ``.``, no ``.git`` suffix
    (as :func:`huggingface_hub.utils.validate_repo_id`, ASCII only). With
    ``owner``, the ``owner/`` part is required (a folder hub's layout).
    """
    if not isinstance(repo_id, str) or not 0 < len(repo_id) <= 96 or "--" in repo_id or ".." in repo_id:
        return False
    parts = repo_id.split("/")
    return ((len(parts) == 2 if owner else len(parts) <= 2) and all(_REPO_PART.match(p) for p in parts)
            and not repo_id.endswith(".git"))


def valid_sha(sha) -> bool:
    """A full git commit id: 40 lowercase hex digits."""
    return isinstance(sha, str) and bool(_SHA.match(sha))


def safe_relpath(path: str) -> str | None:
    """Normalises a path inside a repo; None when it could escape the repo."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return "/".join(parts)


@dataclass(frozen=True)
class HubModel:
    """A model repo as listed by a source, pinned to one commit.

    Attributes:
        repo_id: ``owner/name``.
        sha: the commit every file is fetched at.
        last_modified: ISO 8601 time of that commit, if known.
        siblings: ``(filename, size or None)``; list endpoints give no sizes.
        tags: the hub's tags (``timm``, ``image-classification``, ``generated_from_trainer``...).
        pipeline_tag: e.g. ``image-classification``.
        card_text: README.md's text, None when the repo has none (or it was not fetched).
        config: parsed config.json (or the listing's ``config``), None when missing or not a JSON object.
        card_data: the card's metadata as the listing gave it (``cardData``), None when absent.
        library_name: the library the hub names.
        source: name of the source that listed it (``hf``, ``dir:...``, ``demo``).
        problems: metadata that could not be read (the model is still listed).
        error: why this entry cannot be audited at all ("" when it can).
        category: the failure category of ``error`` (``invalid-repo``, ``hub-error``...).
        limit: ``(name, value)`` of the local limit behind a ``resource-limit`` error.
    """

    repo_id: str
    sha: str
    last_modified: str | None = None
    siblings: tuple[tuple[str, int | None], ...] = ()
    tags: tuple[str, ...] = ()
    pipeline_tag: str | None = None
    card_text: str | None = field(default=None, repr=False)
    config: dict | None = field(default=None, hash=False, compare=False, repr=False)
    card_data: dict | None = field(default=None, hash=False, compare=False, repr=False)
    library_name: str | None = None
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
    def detected(self) -> formats.Detected:
        """The model format, from the file list and the config (no request)."""
        return formats.detect(self.filenames, self.config)


def failed_entry(repo_id, sha, error: str, category: str, source: str = "", limit=None) -> HubModel:
    """A listing entry that cannot be audited; ids are kept as text (truncated) for the record."""
    return HubModel(str(repo_id)[:200], str(sha if sha is not None else "")[:100], source=source, error=error[:2000],
                    category=category, limit=limit)


def entry_failure(e: BaseException) -> tuple[str, tuple[str, float] | None]:
    """The category and limit of an error met while describing an entry (an unknown one: a bad card or config)."""
    return failure_category(e, unknown=FAILED_CORRUPT), next(iter(limits_of(e).items()), None)


@dataclass(frozen=True)
class Fetched:
    """A fetched folder, and whether every file's bytes were verified against the hub's hash."""

    folder: Path
    verified: bool


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
              deadline: float | None = None, files: tuple[str, ...] | None = None) -> Path:
        """Downloads the files a load needs into ``dest_dir`` (see :meth:`fetch_verified`)."""
        return self.fetch_verified(model, dest_dir, max_bytes, deadline, files).folder

    def fetch_verified(self, model: HubModel, dest_dir: str | Path, max_bytes: int | None = None,
                       deadline: float | None = None, files: tuple[str, ...] | None = None) -> Fetched:
        """Downloads the files the model's format needs (``files``, else detected) into ``dest_dir``.

        Sizes are checked before any byte of weights is downloaded, and again
        on the bytes received; small files (configs, index) are capped at the config limit.

        Raises:
            RemoteCodeError: the config asks for remote code (nothing is downloaded).
            UnsupportedFormatError: no registered format reads the repo.
            WeightsTooLargeError: a file is larger than ``max_bytes``.
            HubError: the source failed or the commit is gone (``HashMismatchError``,
                ``FetchTimeoutError``: transient).
        """
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        if files is None and model.config is None and "config.json" in model.filenames:
            # The record carries no config (a caller built it bare): fetch that small file first, then decide.
            cap = min(MAX_CONFIG_BYTES, max_bytes or MAX_CONFIG_BYTES)
            self._download(model, "config.json", dest / "config.json", max_bytes=cap, deadline=deadline)
            model = replace(model, config=formats.read_folder_config(dest))
        if files is None:
            found = model.detected
            if found.refused:
                raise formats.RemoteCodeError(f"{model.repo_id}@{model.sha[:8]}: refused, {found.reason}")
            if not found.supported:
                raise formats.UnsupportedFormatError(f"{model.repo_id}@{model.sha[:8]}: {found.reason}", found.format)
            if not found.files:
                raise CheckpointError(f"{model.repo_id}@{model.sha[:8]}: {found.reason or 'no files to load'}")
            files = found.files
        if not files:
            raise CheckpointError(f"{model.repo_id}@{model.sha[:8]}: no files to load")
        caps = {n: min(MAX_CONFIG_BYTES, max_bytes or MAX_CONFIG_BYTES) if n in SMALL_FILES else max_bytes
                for n in files}
        if max_bytes is not None:
            for name in files:
                size = self._size(model, name)
                if size is None:
                    raise HubError(f"{model.repo_id}@{model.sha[:8]}: size of {name} unknown; refusing to download "
                                   f"it under a {fmt_bytes(max_bytes)} cap")
                if size > max_bytes:
                    raise WeightsTooLargeError(f"{model.repo_id}@{model.sha[:8]}: {name} is {fmt_bytes(size)}, over "
                                               f"the {fmt_bytes(max_bytes)} cap; not downloaded", "max_bytes", max_bytes)
        verified = True
        for name in files:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            ok = self._download(model, name, dest / name, max_bytes=caps[name], deadline=deadline)
            verified = verified and bool(ok)
        return Fetched(dest, verified)

    def close(self) -> None:
        """Releases resources (servers, sessions); idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
