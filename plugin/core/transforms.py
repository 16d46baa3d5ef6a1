"""The random expansion E of METHOD.md step 1: noise, shift, rotation, perspective.

Each copy gets its own random homography (rotation, translation and a
torchvision-style corner-jitter perspective), drawn for a whole batch at once
(one batched solve, no per-copy Python loop) and applied with one
``grid_sample`` call. Two paths share it:

* :func:`expand_leaf` returns raw uint8 RGB copies, for black boxes that must
  receive images (a remote API);
* :func:`expand_to_input` builds the model's own input for a black box that
  publishes an :class:`~plugin.core.blackbox.InputSpec`: each image is resized
  once toward the model's pre-crop size (uint8, torchvision's fast path), then
  warp, crop, noise and normalisation run as one batched op on the black box's
  device. The warp samples straight into the crop, so the border a
  translation needs comes from the resized image, not from black fill.

torch is imported inside the functions only: importing the core loads no torch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from plugin.core.blackbox import crop_start
from plugin.core.images import as_rgb
from plugin.core.recipe import Recipe

_BATCH_RESIZE_PIXELS = 128 * 128  # on CPU, images up to this size are resized in one call per shape
_NOISE_BANK = 16  # noise planes per pass and plane shape; each copy takes one, with a random sign


def _perspective_matrices(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(n, 3, 3)`` homographies mapping each ``src[k]``'s 4 points onto ``dst[k]``'s (one batched solve)."""
    n = len(dst)
    src = np.broadcast_to(src, dst.shape)
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    a = np.zeros((n, 8, 8))
    a[:, 0::2, 0], a[:, 0::2, 1], a[:, 0::2, 2] = x, y, 1
    a[:, 1::2, 3], a[:, 1::2, 4], a[:, 1::2, 5] = x, y, 1
    a[:, 0::2, 6], a[:, 0::2, 7] = -u * x, -u * y
    a[:, 1::2, 6], a[:, 1::2, 7] = -v * x, -v * y
    b = np.stack([u, v], axis=-1).reshape(n, 8)
    h = np.linalg.solve(a, b[..., None])[..., 0]
    return np.concatenate([h, np.ones((n, 1))], axis=1).reshape(n, 3, 3)


def random_homographies(n: int, h: int, w: int, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """``n`` random forward homographies in pixel coordinates centred on an ``h`` x ``w`` image."""
    return homographies_per_image([(h, w)], n, recipe, rng)


def homographies_per_image(sizes: Sequence[tuple[int, int]], r: int, recipe: Recipe,
                           rng: np.random.Generator) -> np.ndarray:
    """``r`` homographies for each image size, image-major: ``(len(sizes) * r, 3, 3)``.

    One draw for all images, not one call per image (a per-image call cost a
    sixth of a 32 px model's search). The random stream is laid out as if
    :func:`random_homographies` had been called per image (rotation, shift,
    then corner jitter), so results do not depend on how images are batched.
    """
    return _homographies(_draws(len(sizes), r, recipe, rng), sizes, r, recipe)


def _draws(m: int, r: int, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """The uniforms behind ``r`` homographies for each of ``m`` images, a row per image."""
    return rng.random((m, r * (3 + (8 if recipe.perspective else 0)))) if m and r else np.zeros((m, 0))


def image_draws(seed: int, start: int, m: int, r: int, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """The uniforms of images ``start .. start + m`` of a leaf: rows of the leaf's one stream ``seed``.

    Image k's copies depend on the leaf's seed and on k alone, not on the job,
    chunk or round that carries it: an adaptive pass sends each image the very
    copies the exhaustive pass sends it, and a GPU (larger chunks) the copies a CPU does.

    Returns:
        ``(m, r * (3 [+ 8]))`` homography uniforms (the layout of :func:`_draws`), and
        ``(m, r, 2)`` noise uniforms per copy (which plane, which sign).
    """
    width = r * (3 + (8 if recipe.perspective else 0))
    if not (m and r):
        return np.zeros((m, width)), np.zeros((m, r, 2))
    u = np.random.default_rng(seed).random((start + m, width + 2 * r))[start:]  # a leaf's rows: 50 x 39 numbers
    return u[:, :width], u[:, width:].reshape(m, r, 2)


def _homographies(u: np.ndarray, sizes: Sequence[tuple[int, int]], r: int, recipe: Recipe) -> np.ndarray:
    """The homographies of :func:`_draws` rows (rows of several draws may be stacked: one solve for all)."""
    m = len(sizes)
    if m == 0 or r == 0:
        return np.zeros((0, 3, 3))
    half = np.asarray(sizes, dtype=float)[:, ::-1] / 2.0  # (m, 2): half width, half height
    rot, tr = recipe.rotate, recipe.translate
    theta = np.deg2rad(-rot + (2 * rot) * u[:, :r])  # low + (high - low) * u: Generator.uniform, bit for bit
    shift = (-tr + (2 * tr) * u[:, r : 3 * r].reshape(m, r, 2)) * (2 * half[:, None, :])
    c, s = np.cos(theta), np.sin(theta)
    out = np.zeros((m, r, 3, 3))
    out[..., 0, 0], out[..., 0, 1], out[..., 0, 2] = c, -s, shift[..., 0]
    out[..., 1, 0], out[..., 1, 1], out[..., 1, 2] = s, c, shift[..., 1]
    out[..., 2, 2] = 1
    out = out.reshape(m * r, 3, 3)
    if recipe.perspective:
        # torchvision's RandomPerspective: each corner moves inwards by up to
        # distortion_scale * half the side.
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)[None] * half[:, None, :]  # (m, 4, 2)
        corners = np.repeat(corners, r, axis=0)
        jitter = recipe.perspective * u[:, 3 * r :].reshape(m * r, 4, 2) * np.abs(corners) * -np.sign(corners)
        out = out @ _perspective_matrices(corners, corners + jitter)
    return out


def _sample_grid(inv: np.ndarray, out_hw: tuple[int, int], offset: np.ndarray, image_hw: np.ndarray,
                 canvas_hw: tuple[int, int], pad: np.ndarray):
    """``grid_sample`` grids: output pixel -> source pixel through ``inv``, in canvas coordinates.

    Args:
        inv: ``(n, 3, 3)`` output -> source homographies, centred on each image.
        out_hw: output size; output pixel (0, 0) sits at source pixel ``offset``.
        offset: ``(n, 2)`` (top, left) of the output window in each image.
        image_hw: ``(n, 2)`` image sizes; pad: ``(n, 2)`` image position in the canvas.

    Returns:
        ``(n, oh, ow, 2)`` float32. The per-image shifts and the canvas scaling
        are folded into one 3x3 matrix per copy, so the grid costs one batched
        matmul and a division.
    """
    import torch

    n = len(inv)
    oh, ow = out_hw
    ch, cw = canvas_hw
    # output pixel (x + 0.5, y + 0.5) -> image-centred coordinates
    pre = np.tile(np.eye(3), (n, 1, 1))
    pre[:, 0, 2] = offset[:, 1] - image_hw[:, 1] / 2
    pre[:, 1, 2] = offset[:, 0] - image_hw[:, 0] / 2
    # image-centred source -> canvas pixel -> [-1, 1] (align_corners=False)
    post = np.tile(np.eye(3), (n, 1, 1))
    post[:, 0, 0], post[:, 0, 2] = 2.0 / cw, (image_hw[:, 1] / 2 + pad[:, 1]) * (2.0 / cw) - 1.0
    post[:, 1, 1], post[:, 1, 2] = 2.0 / ch, (image_hw[:, 0] / 2 + pad[:, 0]) * (2.0 / ch) - 1.0
    m = torch.from_numpy((post @ inv @ pre).astype(np.float32))  # (n, 3, 3)
    xs = torch.arange(ow, dtype=torch.float32) + 0.5
    ys = torch.arange(oh, dtype=torch.float32) + 0.5

    def row(k):  # m[k] . (x, y, 1): a small x part plus a small y part, one full-size add
        return (m[:, k, 0, None] * xs + m[:, k, 2, None])[:, None, :] + (m[:, k, 1, None] * ys)[:, :, None]

    den = row(2)
    return torch.stack([row(0).div_(den), row(1).div_(den)], dim=-1)


def warp(batch, homographies: np.ndarray):
    """Applies forward homographies to a ``(N, C, H, W)`` tensor (black fill), returning float."""
    import torch

    n, _, h, w = batch.shape
    hw = np.tile([h, w], (n, 1)).astype(float)
    grid = _sample_grid(np.linalg.inv(homographies), (h, w), np.zeros((n, 2)), hw, (h, w), np.zeros((n, 2)))
    return torch.nn.functional.grid_sample(batch.float(), grid.to(batch.device), mode="bilinear",
                                           padding_mode="zeros", align_corners=False)


def expand_leaf(images: Sequence[np.ndarray], recipe: Recipe, seed: int, start: int = 0) -> list[np.ndarray]:
    """Returns ``copies_per_image`` raw uint8 copies of each image, image-major.

    Copy 0 is the original when ``include_original`` is set. ``images`` are
    images ``start ..`` of the leaf whose stream is ``seed`` (:func:`image_draws`):
    a copy does not depend on corpus order, batch size or the pass.
    """
    import torch

    r = recipe.transforms_per_image
    imgs = [as_rgb(im) for im in images]
    copies: list[list[np.ndarray]] = [[im] if recipe.include_original else [] for im in imgs]
    if r:
        hom, picks = image_draws(seed, start, len(imgs), r, recipe)
        by_shape: dict[tuple, list[int]] = {}
        for idx, im in enumerate(imgs):
            by_shape.setdefault(im.shape, []).append(idx)
        for (h, w, _), idxs in by_shape.items():
            batch = torch.from_numpy(np.stack([imgs[i] for i in idxs])).permute(0, 3, 1, 2)
            batch = batch.repeat_interleave(r, dim=0)
            warped = warp(batch, _homographies(hom[idxs], [(h, w)] * len(idxs), r, recipe))
            if recipe.noise:
                _add_noise(warped.view(len(idxs), r, 3, h, w), recipe, picks[idxs], warped.device)
            arr = warped.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for pos, i in enumerate(idxs):
                copies[i].extend(arr[pos * r : (pos + 1) * r])
    return [c for per_image in copies for c in per_image]


def resized_alone(image) -> bool:
    """Whether :func:`resize_batch` resizes ``image`` on its own on CPU (too large to stack with others).

    ``image``: HxW or HxWxC array, or a ``(C, h, w)`` tensor.
    """
    shape = tuple(image.shape)
    hw = shape[-2:] if hasattr(image, "permute") else shape[:2]
    return hw[0] * hw[1] > _BATCH_RESIZE_PIXELS


def resize_to_spec(img: np.ndarray, spec, device: str | None = None):
    """One raw image -> a ``(3, h, w)`` uint8 tensor at the model's pre-crop size (its own interpolation)."""
    return resize_batch([img], spec, device)[0]


def resize_batch(images: Sequence, spec, device: str | None = None) -> list:
    """Raw images -> ``(3, h, w)`` uint8 tensors at the model's pre-crop size, in order.

    On CUDA, and for small images anywhere, images of one shape are resized
    together, one interpolate call per shape: there a per-image call costs
    more in launches and Python than the resize itself (28 px demo images: 4x
    faster batched). Large images on CPU go one at a time, zero-copy, since
    stacking them costs a copy and buys nothing (measured at 375x500).

    torch's antialiased uint8 resize on CPU (torchvision's fast path, kept
    channels-last); float on other devices, rounded back to uint8 as
    torchvision does. Each image's result is the same as resizing it alone.
    """
    import torch

    dev = torch.device(device or spec.device)
    rgbs = [as_rgb(img) for img in images]
    groups: dict[tuple, list[int]] = {}
    for i, rgb in enumerate(rgbs):
        alone = dev.type == "cpu" and resized_alone(rgb)
        groups.setdefault((*rgb.shape[:2], i if alone else -1), []).append(i)
    mode = {"bicubic": "bicubic", "nearest": "nearest", "nearest-exact": "nearest-exact"}.get(spec.interpolation,
                                                                                             "bilinear")
    near = mode.startswith("nearest")
    kw = {} if near else {"antialias": True, "align_corners": False}
    out: list = [None] * len(rgbs)
    for (*shape, _), idx in groups.items():
        first = rgbs[idx[0]]
        if len(idx) == 1 and first.flags.writeable and first.flags.c_contiguous:
            stacked = first[None]  # zero-copy
        else:
            stacked = np.stack([rgbs[i] for i in idx])  # a fresh, writable array: cached views are read-only
        x = torch.from_numpy(stacked)
        if dev.type == "cuda":
            x = x.pin_memory()
        x = x.to(dev, non_blocking=True).permute(0, 3, 1, 2)
        size = spec.resize_size(*shape)
        if tuple(size) != tuple(shape):
            if x.device.type != "cpu" or near:
                x = torch.nn.functional.interpolate(x.float(), size=list(size), mode=mode, **kw)
                x = x.round_().clamp_(0, 255).to(torch.uint8)
            else:
                x = torch.nn.functional.interpolate(x, size=list(size), mode=mode, **kw)  # channels-last: the uint8 fast path
        for k, i in enumerate(idx):
            out[i] = x[k]
    return out


def expand_to_input(jobs: Sequence[tuple[Sequence, int, int]], recipe: Recipe, spec):
    """The model's input for every copy of every image of ``jobs``, as one tensor.

    Args:
        jobs: ``(images, seed, start)``: images ``start ..`` of the leaf whose stream is ``seed``
            (:func:`image_draws`); images are raw HxWx3 uint8 arrays or
            ``(3, h, w)`` uint8 tensors already at the spec's pre-crop size.
        spec: the black box's :class:`~plugin.core.blackbox.InputSpec`.

    Returns:
        ``(sum copies, 3, H, W)`` normalised, on ``spec.device`` in ``spec.dtype``,
        image-major within each job and jobs in order (as :func:`expand_leaf`).
    """
    import torch

    dev = torch.device(spec.device)
    oh, ow = spec.size
    r, k = recipe.transforms_per_image, recipe.copies_per_image
    resized, draws, picks = [], [], []
    raw = [img for images, _, _ in jobs for img in images if not hasattr(img, "permute")]
    done = iter(resize_batch(raw, spec) if raw else [])  # one resize per image shape, not per image
    for images, seed, start in jobs:
        resized += [img if hasattr(img, "permute") else next(done) for img in images]
        hom, pick = image_draws(seed, start, len(images), r, recipe)  # each image its own rows, as expand_leaf
        draws.append(hom)
        picks.append(pick)
    n = len(resized)
    if n == 0:
        return torch.zeros((0, 3, oh, ow), device=dev, dtype=getattr(torch, spec.dtype))
    resized = [t if t.device == dev else t.to(dev, non_blocking=True) for t in resized]
    sizes = [tuple(t.shape[-2:]) for t in resized]
    image_hw = np.array(sizes, dtype=float)
    ch, cw = int(image_hw[:, 0].max()), int(image_hw[:, 1].max())
    pad = np.stack([(ch - image_hw[:, 0]) // 2, (cw - image_hw[:, 1]) // 2], axis=1)
    # Images of one shape share their place in the canvas and their crop window: one op per shape,
    # not per image (a per-image loop was a third of a 32 px model's expansion on the mixed demo corpus).
    by_shape: dict[tuple, list[int]] = {}
    for i, hw in enumerate(sizes):
        by_shape.setdefault(hw, []).append(i)
    if len(by_shape) == 1:
        canvas = torch.stack(resized)
    else:
        canvas = torch.zeros((n, 3, ch, cw), dtype=torch.uint8, device=dev)
        for (h, w), idx in by_shape.items():
            py, px = (ch - h) // 2, (cw - w) // 2
            canvas[idx, :, py : py + h, px : px + w] = torch.stack([resized[i] for i in idx])
    del resized
    offset = crop_start(image_hw, (oh, ow), spec.crop_offset)  # where the model's own centre crop starts
    out = torch.empty((n * k, 3, oh, ow), dtype=torch.float32, device=dev)
    if recipe.include_original:  # identity copies: a plain crop, no resampling
        originals = out.view(n, k, 3, oh, ow)
        for idx in by_shape.values():
            y0, x0 = int(pad[idx[0], 0] + offset[idx[0], 0]), int(pad[idx[0], 1] + offset[idx[0], 1])
            crop = canvas[:, :, max(y0, 0) : y0 + oh, max(x0, 0) : x0 + ow]
            every = len(idx) == n
            crop = crop if every else crop[idx]
            if crop.shape[-2:] == (oh, ow) and every:
                originals[:, 0] = crop  # one shape: a strided copy, no index_put
            elif crop.shape[-2:] == (oh, ow):
                originals[idx, 0] = crop.float()
            else:  # an image smaller than the crop: black border, as center_crop pads
                framed = torch.zeros((len(idx), 3, oh, ow), dtype=torch.float32, device=dev)
                framed[:, :, max(-y0, 0) : max(-y0, 0) + crop.shape[-2], max(-x0, 0) : max(-x0, 0) + crop.shape[-1]] = crop
                originals[idx, 0] = framed
    if r:
        inv = np.linalg.inv(_homographies(np.concatenate(draws), sizes, r, recipe))  # one solve for the chunk
        rep = np.repeat(np.arange(n), r)
        grid = _sample_grid(inv, (oh, ow), offset[rep], image_hw[rep], (ch, cw), pad[rep]).to(dev, non_blocking=True)
        # The r grids of one image stacked vertically: one sample of each canvas, no r-fold copy of it.
        grid = grid.view(n, r * oh, ow, 2)
        warped = torch.nn.functional.grid_sample(canvas.float(), grid, mode="bilinear", padding_mode="zeros",
                                                 align_corners=False)  # (n, 3, r * oh, ow)
        del grid
        warped = warped.view(n, 3, r, oh, ow).transpose(1, 2)
        if recipe.noise:
            _add_noise(warped, recipe, np.concatenate(picks), dev)
        out.view(n, k, 3, oh, ow)[:, k - r :] = warped
        del warped
    out.clamp_(0, 255)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    out.mul_(1.0 / (255.0 * std)).sub_(mean / std)
    if spec.bgr:  # normalised in RGB order, then flipped, as the model's processor does
        out = out.flip(1)
    return out.to(getattr(torch, spec.dtype))


def _add_noise(x, recipe: Recipe, picks: np.ndarray, dev) -> None:
    """Adds uniform noise in ``[-amp, amp]`` (``noise`` x 255) to every copy of ``x`` (n, r, c, h, w), in place.

    Drawing a fresh plane per copy costs as much as the warp on CPU; copies
    instead take one of a few planes, each with a random sign (uniform noise
    is symmetric): as good as independent noise for a classifier, at the cost
    of one fused multiply-add. The planes come from the recipe's seed and the
    plane shape, and each copy's plane and sign from its image's ``picks``
    (:func:`image_draws`), so a copy's noise does not depend on its batch.
    """
    import torch

    n, r, *plane = x.shape
    amp = recipe.noise * 255
    state = np.random.SeedSequence([recipe.seed, *plane]).generate_state(1, np.uint64)
    g = torch.Generator(device="cpu").manual_seed(int(state[0]) & (2**63 - 1))
    bank = (torch.rand((_NOISE_BANK, *plane), generator=g) * (2 * amp) - amp).to(dev)
    pick = torch.from_numpy(np.minimum((picks[..., 0] * _NOISE_BANK).astype(np.int64), _NOISE_BANK - 1)).to(dev)
    sign = torch.from_numpy(np.where(picks[..., 1] < 0.5, -1.0, 1.0).astype(np.float32)).to(dev)
    x.addcmul_(bank[pick.view(-1)].view(x.shape), sign.view(n, r, 1, 1, 1))
