"""Step 1 of the search: functional scores ``l(i, j)`` from one pass of queries.

Sees only a :class:`~plugin.core.blackbox.BlackBox` and a
:class:`~plugin.core.corpus.Corpus`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from plugin.core.blackbox import BlackBox
from plugin.core.corpus import Corpus
from plugin.core.recipe import Recipe
from plugin.core.transforms import expand_leaf

Progress = Callable[[int], None]  # called with the number of queries just made
CHUNK = 512  # images expanded ahead of the black box; bounds memory on ImageNet


@dataclass
class ScorePass:
    """The result of the one pass over the corpus (step 1).

    Attributes:
        counts: ``(num_classes, num_leaves)`` copies of leaf j labelled i.
        totals: copies sent per leaf.
        n_images: distinct images per leaf.
        labels: per leaf, an ``(n_images, copies)`` array of hard labels.
    """

    leaves: list[str]
    counts: np.ndarray
    totals: np.ndarray
    n_images: np.ndarray
    labels: list[np.ndarray]
    queries: int
    seconds: float

    @property
    def scores(self) -> np.ndarray:
        """The functional-score matrix ``l(i, j)``."""
        return self.counts / np.maximum(self.totals, 1)[None, :]


def wilson_lower_bound(p: np.ndarray | float, n: np.ndarray | float, z: float) -> np.ndarray:
    """Lower confidence bound of a proportion observed on ``n`` images.

    Copies of one image are strongly correlated, so ``n`` is the number of
    distinct images: a one-image leaf at 1.0 is weak evidence (METHOD.md,
    "Generality"), a 50-image leaf at 0.9 is strong.
    """
    p = np.asarray(p, dtype=float)
    n = np.maximum(np.asarray(n, dtype=float), 1e-9)
    if z <= 0:
        return p
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(np.maximum(p * (1 - p) / n + z * z / (4 * n * n), 0))
    return np.clip((centre - margin) / denom, 0.0, 1.0)


def functional_scores(blackbox: BlackBox, corpus: Corpus, recipe: Recipe, progress: Progress | None = None) -> ScorePass:
    """Step 1: one batched pass giving ``l(i, j)`` for every class at once."""
    t0 = time.time()
    start_queries = blackbox.num_queries
    copies = recipe.copies_per_image
    leaves = corpus.leaves
    n_images = np.array([min(len(l), recipe.images_per_leaf) for l in leaves])
    labels = [np.full((n, copies), -1, dtype=np.int64) for n in n_images]
    pending: list[np.ndarray] = []
    where: list[tuple[int, int, int]] = []  # (leaf, image, copy) of each pending image

    def flush():
        if not pending:
            return
        out = blackbox.predict(pending)
        for (j, img, c), lab in zip(where, out):
            labels[j][img, c] = lab
        if progress:
            progress(len(pending))
        pending.clear()
        where.clear()

    for j, leaf in enumerate(leaves):
        imgs = [leaf.images[k] for k in range(n_images[j])]
        expanded = expand_leaf(imgs, recipe, seed=recipe.seed * 1_000_003 + j)
        for pos, img in enumerate(expanded):
            pending.append(img)
            where.append((j, pos // copies, pos % copies))
            if len(pending) >= CHUNK:
                flush()
    flush()
    observed = max((int(l.max()) for l in labels if l.size), default=-1) + 1
    num_classes = blackbox.num_classes or observed
    if observed > num_classes:
        raise ValueError(f"black box returned label {observed - 1} but claims {num_classes} classes")
    counts = np.zeros((num_classes, len(leaves)), dtype=np.int64)
    for j, lab in enumerate(labels):
        counts[:, j] = np.bincount(lab.ravel(), minlength=num_classes)
    return ScorePass([l.synset for l in leaves], counts, n_images * copies, n_images, labels,
                     blackbox.num_queries - start_queries, time.time() - t0)


def image_labels(labels: np.ndarray, recipe: Recipe) -> np.ndarray:
    """One label per image for filtering: the original's, else the copies' majority."""
    if recipe.include_original:
        return labels[:, 0]
    return np.array([np.bincount(row).argmax() for row in labels])
