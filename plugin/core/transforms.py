"""The random expansion E of METHOD.md step 1: noise, shift, rotation, perspective.

Each copy gets its own random homography (rotation, translation and a
torchvision-style corner-jitter perspective), applied to a whole leaf at once
with one ``grid_sample`` call. Per-image torchvision v2 transforms cost about
30 ms an image on these 2 cores; the batched warp is ~100x cheaper, which
matters when a black box answers thousands of images a second.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from plugin.core.images import as_rgb
from plugin.core.recipe import Recipe


def _perspective_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 homography mapping 4 ``src`` points onto 4 ``dst`` points."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    h = np.linalg.solve(np.array(a, float), np.array(b, float))
    return np.append(h, 1.0).reshape(3, 3)


def random_homographies(n: int, h: int, w: int, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """``n`` random forward homographies in pixel coordinates centred on the image."""
    out = np.empty((n, 3, 3))
    hw, hh = w / 2.0, h / 2.0
    corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
    for k in range(n):
        theta = np.deg2rad(rng.uniform(-recipe.rotate, recipe.rotate))
        tx, ty = rng.uniform(-recipe.translate, recipe.translate, 2) * (w, h)
        c, s = np.cos(theta), np.sin(theta)
        affine = np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])
        # torchvision's RandomPerspective: each corner moves inwards by up to
        # distortion_scale * half the side.
        jitter = rng.uniform(0, recipe.perspective, (4, 2)) * (hw, hh) * -np.sign(corners)
        persp = _perspective_matrix(corners, corners + jitter) if recipe.perspective else np.eye(3)
        out[k] = affine @ persp
    return out


def warp(batch, homographies: np.ndarray):
    """Applies forward homographies to a uint8 ``(N, C, H, W)`` tensor (black fill)."""
    import torch

    n, _, h, w = batch.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5 - h / 2,
                            torch.arange(w, dtype=torch.float64) + 0.5 - w / 2, indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # output pixels
    inv = torch.from_numpy(np.linalg.inv(homographies))  # output -> input
    src = torch.einsum("nij,pj->npi", inv, pts)
    src = src[..., :2] / src[..., 2:3]
    grid = torch.stack([src[..., 0] / (w / 2), src[..., 1] / (h / 2)], dim=-1).reshape(n, h, w, 2)
    out = torch.nn.functional.grid_sample(batch.float(), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out


def expand_leaf(images: Sequence[np.ndarray], recipe: Recipe, seed: int) -> list[np.ndarray]:
    """Returns ``copies_per_image`` copies of each image, image-major.

    Copy 0 is the original when ``include_original`` is set. Seeding per leaf
    keeps results independent of corpus order and batch size.
    """
    import torch

    rng = np.random.default_rng(seed)
    r = recipe.transforms_per_image
    imgs = [as_rgb(im) for im in images]
    copies: list[list[np.ndarray]] = [[im] if recipe.include_original else [] for im in imgs]
    if r:
        by_shape: dict[tuple, list[int]] = {}
        for idx, im in enumerate(imgs):
            by_shape.setdefault(im.shape, []).append(idx)
        for (h, w, _), idxs in by_shape.items():
            batch = torch.from_numpy(np.stack([imgs[i] for i in idxs])).permute(0, 3, 1, 2)
            batch = batch.repeat_interleave(r, dim=0)
            warped = warp(batch, random_homographies(len(batch), h, w, recipe, rng))
            if recipe.noise:
                amp = recipe.noise * 255
                warped += torch.from_numpy(rng.uniform(-amp, amp, size=tuple(warped.shape)).astype(np.float32))
            arr = warped.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for pos, i in enumerate(idxs):
                copies[i].extend(arr[pos * r : (pos + 1) * r])
    return [c for per_image in copies for c in per_image]
