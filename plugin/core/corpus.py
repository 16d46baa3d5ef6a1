"""The corpus model: leaves of images, optionally with a tree over them.

A :class:`Corpus` is what the search sees: leaves (one per synset or class),
each a sequence of HxWx3 uint8 images, plus a :class:`Hierarchy` for
hierarchical corpora (``None`` for flat auxiliary ones). Loading corpora from
disk lives in :mod:`plugin.corpora`.
"""
from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from plugin.core.errors import CorpusError, UnknownNameError
from plugin.core.hierarchy import Hierarchy


class LazyImages(SequenceABC):
    """A leaf's ``n`` images made on access, one at a time, never all resident; subclasses give ``_load``."""

    def __init__(self, n: int):
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._n))]
        if not -self._n <= k < self._n:
            raise IndexError(k)
        return self._load(k % self._n)

    def _load(self, k: int) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Leaf:
    """One leaf class of a corpus."""

    synset: str
    name: str
    images: Sequence[np.ndarray]
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Corpus:
    """Leaves plus, for hierarchical corpora, the tree over them.

    Attributes:
        label_orders: canonical label orders the corpus knows, e.g.
            ``{"Fashion-MNIST": [synset of class 0, ...]}``; used by the
            dataset-index check.
        skipped: files that could not be used, as ``(path, reason)``.
    """

    name: str
    leaves: list[Leaf]
    hierarchy: Hierarchy | None = None
    label_orders: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        empty = [leaf.synset for leaf in self.leaves if len(leaf) == 0]
        if empty:
            raise CorpusError(f"corpus {self.name!r} has empty leaves: {empty}")
        if not self.leaves:
            raise CorpusError(f"corpus {self.name!r} has no leaves")
        seen = set()
        for leaf in self.leaves:
            if leaf.synset in seen:
                raise CorpusError(f"corpus {self.name!r} has leaf {leaf.synset} twice")
            seen.add(leaf.synset)
        if self.hierarchy is not None:
            missing = [leaf.synset for leaf in self.leaves if leaf.synset not in self.hierarchy]
            if missing:
                raise CorpusError(f"leaves not in the hierarchy: {missing[:5]}")

    @property
    def synsets(self) -> list[str]:
        return [leaf.synset for leaf in self.leaves]

    def leaf(self, synset: str) -> Leaf:
        for leaf in self.leaves:
            if leaf.synset == synset:
                return leaf
        raise UnknownNameError(f"no leaf {synset!r} in corpus {self.name!r}")

    def without(self, synsets: Iterable[str]) -> "Corpus":
        """The same corpus with some leaves removed (an open-world test).

        The hierarchy keeps every node, so a removed leaf's ancestors can still
        be named as domains.
        """
        drop = set(synsets)
        unknown = drop - set(self.synsets)
        if unknown:
            raise UnknownNameError(f"cannot remove unknown leaves {sorted(unknown)}; corpus has {self.synsets}")
        return replace(self, name=f"{self.name}-without-{'-'.join(sorted(drop))}",
                       leaves=[leaf for leaf in self.leaves if leaf.synset not in drop])

    def summary(self) -> list[dict]:
        return [{"synset": l.synset, "name": l.name, "images": len(l), "source": l.source} for l in self.leaves]
