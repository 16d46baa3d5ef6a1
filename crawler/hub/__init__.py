"""The hub side of the crawler, one job per module.

* :mod:`crawler.hub.http`: the one HTTP seam (capped, timed, retried requests; one error translation; hashes);
* :mod:`crawler.hub.source`: the listing record, the Hub's naming rules, the pinned fetch every source shares;
* :mod:`crawler.hub.hf`: the Hugging Face Hub as a source;
* :mod:`crawler.hub.folder`: a hub-layout folder as the Hub would describe it, and as a source;
* :mod:`crawler.hub.server`: that folder served over the Hub's HTTP API on loopback.

Sources are named in one registry: ``hf``, ``hf:ENDPOINT``, ``dir:PATH``,
and ``demo``/``demo:PATH`` (registered by the demo through entry points).
"""
from __future__ import annotations

from typing import Callable

from crawler.hub.folder import DirSource
from crawler.hub.hf import HfSource
from crawler.hub.http import FetchTimeoutError, HashMismatchError, ListingError, WeightsTooLargeError, hub_errors
from crawler.hub.source import Fetched, HubModel, ModelSource, failed_entry, valid_repo_id, valid_sha
from plugin.core.errors import ConfigError, UnknownNameError
from plugin.core.registry import Registry


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
    Keyword options go to the source's constructor (e.g. ``author``, ``limit``, ``library``).

    Raises:
        UnknownNameError: the spec names no registered source.
        ConfigError: the spec lacks a required argument.
    """
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCES:
        raise UnknownNameError(f"unknown model source {spec!r}; valid: {', '.join(SOURCE_SPECS)}")
    return SOURCES.get(kind)(arg.strip() if sep else None, **opts)


__all__ = ["DirSource", "FetchTimeoutError", "Fetched", "HashMismatchError", "HfSource", "HubModel", "ListingError",
           "ModelSource", "SOURCES", "SOURCE_SPECS", "WeightsTooLargeError", "failed_entry", "get_source",
           "hub_errors", "valid_repo_id", "valid_sha"]
