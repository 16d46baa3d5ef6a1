"""One shallow error hierarchy for the whole project.

Every error subclasses a built-in exception, so callers that only know
``ValueError`` or ``OSError`` still catch them. Low-level errors (PIL, torch,
httpx, safetensors) are translated into these in one place each, with
``raise ... from e`` so the original cause stays visible.
"""
from __future__ import annotations


class DomainFinderError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(DomainFinderError, ValueError):
    """A recipe, CLI option or config file is invalid."""


class UnknownNameError(DomainFinderError, KeyError):
    """A registry lookup failed; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class HierarchyError(DomainFinderError, ValueError):
    """A synset or tree node is unknown, or a tree file is malformed."""


class CorpusError(DomainFinderError, ValueError):
    """A corpus folder is missing, malformed or has an empty leaf."""


class CorruptImageError(CorpusError):
    """An image file cannot be decoded."""


class CheckpointError(DomainFinderError, ValueError):
    """A checkpoint folder is missing files, malformed or cannot be loaded."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint was refused because loading it could execute code."""


class UnsupportedCheckpointError(CheckpointError):
    """A well-formed checkpoint in a form we do not reproduce exactly (an image processor, an input layout).

    Refused with its name rather than guessed; nothing about the files is broken.
    """


class QueryBudgetExceeded(DomainFinderError, RuntimeError):
    """A black box was asked for more queries than its budget allows."""


class HubError(DomainFinderError, OSError):
    """The model hub answered with an error or could not be reached."""
