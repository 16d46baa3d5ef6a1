"""Hard-label black boxes: what the search may know about a model.

The search and the checks only ever see the :class:`BlackBox` protocol: images
in, argmax labels out. Every image counts as one query against an optional
budget, as a paid remote API would. Concrete black boxes (a local torch model)
live in :mod:`plugin.models`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from plugin.core.errors import QueryBudgetExceeded


@dataclass(frozen=True)
class InputSpec:
    """The input a local black box builds from raw RGB (its own eval preprocessing).

    A black box that publishes one lets the search build that input directly:
    resize once toward the model's resolution, expand, crop and normalise in
    one batched op on ``device`` (:func:`plugin.core.transforms.expand_to_input`).
    A remote API publishes none and gets raw RGB images instead.
    """

    size: tuple[int, int]  # (h, w) the model sees
    crop_pct: float = 1.0
    crop_mode: str = "center"  # center | squash
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    device: str = "cpu"
    dtype: str = "float32"  # what predict_tensor wants: float32 | bfloat16 | float16
    crop_offset: str = "round"  # a centre crop starts at half the leftover, rounded (timm) or floored (transformers)
    bgr: bool = False  # the model sees BGR: normalised in RGB order, then the channels flipped

    def resize_size(self, h: int, w: int) -> tuple[int, int]:
        """Size of an ``h`` x ``w`` image after the model's resize, before its crop (timm rules)."""
        th, tw = math.floor(self.size[0] / self.crop_pct), math.floor(self.size[1] / self.crop_pct)
        if self.crop_mode == "squash":
            return th, tw
        if th == tw:  # timm's Resize(int): the shorter side, keeping the ratio
            short, long = (h, w) if h <= w else (w, h)
            other = int(th * long / short)
            return (th, other) if h <= w else (other, th)
        ratio = min(h / th, w / tw)  # timm's ResizeKeepRatio
        return round(h / ratio), round(w / ratio)


def crop_start(image_hw, crop_hw, rule: str = "round") -> np.ndarray:
    """Where a centre crop of ``crop_hw`` starts in an image of ``image_hw``: ``(top, left)`` (or ``(n, 2)``).

    Half the leftover, rounded half to even (torchvision and timm, ``"round"``)
    or floored (transformers' processors, ``"floor"``): on an odd leftover the
    two windows are one pixel apart. An image smaller than the crop is padded by
    both to start at minus the floor of half the shortfall.
    """
    left = np.asarray(image_hw, dtype=np.int64) - np.asarray(crop_hw, dtype=np.int64)
    half = left // 2 if rule == "floor" else np.round(left / 2.0).astype(np.int64)
    return np.where(left < 0, -((-left) // 2), half)


@runtime_checkable
class TensorBlackBox(Protocol):
    """Optional second path: a local black box that takes its model input as a tensor."""

    input_spec: InputSpec

    def predict_tensor(self, batch: Any) -> np.ndarray: ...


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
        self._charge(n)
        labels = np.asarray(self._predict(images), dtype=np.int64) if n else np.zeros(0, np.int64)
        self._num_queries += n
        return labels

    def predict_tensor(self, batch) -> np.ndarray:
        """Labels for an already preprocessed ``(N, C, H, W)`` batch (the :class:`InputSpec` path).

        Counted and budgeted exactly like :meth:`predict`: one row, one query.

        Raises:
            QueryBudgetExceeded: the batch would exceed the query budget.
        """
        n = int(batch.shape[0])
        self._charge(n)
        labels = np.asarray(self._predict_tensor(batch), dtype=np.int64) if n else np.zeros(0, np.int64)
        self._num_queries += n
        return labels

    def _charge(self, n: int) -> None:
        if self.budget is not None and self._num_queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"query budget of {self.budget} exceeded: {self._num_queries} used, {n} more requested"
            )

    def _predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _predict_tensor(self, batch) -> np.ndarray:
        raise NotImplementedError
