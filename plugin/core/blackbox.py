"""Hard-label black boxes: what the search may know about a model.

The search and the checks only ever see the :class:`BlackBox` protocol: images
in, argmax labels out. Every image counts as one query against an optional
budget, as a paid remote API would. Concrete black boxes (a local torch model)
live in :mod:`plugin.models`.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from plugin.core.errors import QueryBudgetExceeded


@runtime_checkable
class BlackBox(Protocol):
    """What the search may know about a model."""

    num_classes: int | None

    @property
    def num_queries(self) -> int: ...

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


class CountingBlackBox:
    """Base class that counts queries and enforces a budget.

    Subclasses implement ``_predict``; the budget is checked before any work,
    so a refused batch costs nothing.
    """

    def __init__(self, num_classes: int | None = None, budget: int | None = None):
        self.num_classes = num_classes
        self.budget = budget
        self._num_queries = 0

    @property
    def num_queries(self) -> int:
        return self._num_queries

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Returns one int label per image.

        Raises:
            QueryBudgetExceeded: the batch would exceed the query budget.
        """
        n = len(images)
        if self.budget is not None and self._num_queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"query budget of {self.budget} exceeded: {self._num_queries} used, {n} more requested"
            )
        labels = np.asarray(self._predict(images), dtype=np.int64) if n else np.zeros(0, np.int64)
        self._num_queries += n
        return labels

    def _predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError
