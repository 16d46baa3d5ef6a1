"""Image helpers shared by every layer (no I/O)."""
from __future__ import annotations

import numpy as np


def as_rgb(img: np.ndarray) -> np.ndarray:
    """Accepts HxW, HxWx1, HxWx3 or HxWx4 uint8 and returns HxWx3 uint8."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"images must be HxW or HxWxC with C in 1, 3, 4; got shape {img.shape}")
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img[:, :, :3]
