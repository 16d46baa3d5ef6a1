"""The records every model format shares: what a repo is (:class:`Detected`) and why one is not loaded.

Kept apart from :mod:`plugin.models.formats` (the registry), which imports the formats that import these.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.models.hub_layout import CONFIG, parse_config_text
from plugin.models.limits import MAX_CONFIG_BYTES, ResourceLimitError

README = "README.md"
PREPROCESSOR = "preprocessor_config.json"


class RemoteCodeError(UnsafeCheckpointError):
    """The repo's config asks for code shipped with the repo (``auto_map``) or an architecture we don't know."""


class UnsupportedFormatError(CheckpointError):
    """The repo holds a model format no registered loader reads; ``format`` names it."""

    def __init__(self, message: str, format: str):  # noqa: A002 - the word users see
        super().__init__(message)
        self.format = format


@dataclass(frozen=True)
class Detected:
    """What a repo is, read from its file names and config.

    Attributes:
        format: ``timm``, ``transformers``, ``onnx``, or the unsupported format's name.
        files: what a fetch needs, in order (empty when nothing will be loaded).
        supported: a registered loader reads it.
        refused: it would need remote code; never downloaded or loaded.
        encoder: it has no classification head (a feature encoder).
        reason: why it is refused, unsupported or an encoder ("" otherwise).
        library: the library the Hub would name (``transformers``, ``timm``, ``onnx``, ``keras``...).
        pipeline_tag: the task the Hub would infer from the files and config (None when they don't say).
    """

    format: str
    files: tuple[str, ...] = ()
    supported: bool = True
    refused: bool = False
    encoder: bool = False
    reason: str = ""
    library: str | None = None
    pipeline_tag: str | None = None


def read_folder_config(folder: Path) -> dict | None:
    """A folder's ``config.json``, parsed within the limits; None when there is none."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ResourceLimitError(f"{path}: over the {MAX_CONFIG_BYTES}-byte limit for a config", "max_config_bytes",
                                 MAX_CONFIG_BYTES)
    return parse_config_text(path.read_text(encoding="utf-8", errors="replace"), str(path))
