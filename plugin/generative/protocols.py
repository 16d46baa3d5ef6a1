"""The two seams of Method 1: a text-to-image generator and an image-text encoder.

The search (:mod:`plugin.generative.search`) sees only these, as numpy arrays,
so it runs the same on Stable Diffusion + CLIP (:mod:`plugin.generative.real`)
and on small deterministic fakes whose right answer is known.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Generator(Protocol):
    """A conditional sampler: an embedding plus a seed gives one image.

    ``encode_prompts`` maps text into the generator's conditioning space (for
    Stable Diffusion: its CLIP text encoder's hidden states, ``(n, L, H)``);
    the search combines those arrays linearly and hands them back to
    ``generate``. The same embedding and seed must give the same image.
    """

    def encode_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, *shape)`` float32 conditioning, one per prompt."""

    def generate(self, embeddings: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """``(n, len(seeds), h, w, 3)`` uint8 images: each embedding sampled with each seed."""


@runtime_checkable
class Encoder(Protocol):
    """A joint image-text embedding (CLIP): the space where generality is measured."""

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` float32 text embeddings, one per prompt."""

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """``(m, d)`` float32 embeddings of ``(m, h, w, 3)`` uint8 images."""
