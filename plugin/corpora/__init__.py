"""Corpus loaders: named corpora in one registry, and ImageNet-layout folders by path.

The demo corpus registers itself through the ``domain_finder.corpora``
entry-point group, so nothing here imports demo code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from plugin.core.corpus import Corpus
from plugin.core.errors import UnknownNameError
from plugin.core.registry import Registry
from plugin.corpora.imagenet import load_imagenet_folder

CORPORA: Registry[Callable[..., Corpus]] = Registry("corpus", group="domain_finder.corpora")


def register_corpus(name: str, factory: Callable[..., Corpus]) -> None:
    CORPORA.register(name, factory)


def get_corpus(name_or_path: str, **kwargs) -> Corpus:
    """A registered corpus by name, or an ImageNet-layout folder by path.

    Raises:
        UnknownNameError: neither a registered name nor an existing folder.
    """
    if name_or_path in CORPORA:
        return CORPORA.get(name_or_path)(**kwargs)
    if Path(name_or_path).is_dir():
        return load_imagenet_folder(name_or_path, **kwargs)
    raise UnknownNameError(f"unknown corpus {name_or_path!r}: use one of {CORPORA.names()} "
                           "or a path to an ImageNet-layout folder")
