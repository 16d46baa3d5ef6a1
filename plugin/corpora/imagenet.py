"""ImageNet-layout folders (one folder per synset) and image decoding.

Leaves are streamed: loading validates each leaf once (decoding it in a
thread pool, two leaves at a time, and writing the on-disk cache under
:func:`~plugin.core.settings.cache_root`), and a leaf's ``images`` is a lazy
sequence that reads one image from the cache (or decodes one file) when the
search asks for it. Peak memory is a few leaves, not the corpus: a decoded
ImageNet val at 240x320 would be about 11.5 GB.

``short_side`` stores images already resized for a model's input (e.g. 256
for a 224 px model with crop_pct 0.875): JPEGs are then decoded at a reduced
scale (PIL's draft mode) and the cache key records corpus files, resolution
and :data:`LOADER_VERSION`.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from plugin.core.corpus import Corpus, LazyImages, Leaf
from plugin.core.errors import CorpusError, CorruptImageError, HierarchyError
from plugin.core.hierarchy import Hierarchy, normalize_wnid
from plugin.core.settings import cache_root, io_threads

log = logging.getLogger(__name__)
LOADER_VERSION = 2  # part of every cache key: a loader change never serves stale images
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


# -- image decoding -----------------------------------------------------------
def decode_image(path: str | Path, max_side: int | None = None, short_side: int | None = None) -> np.ndarray:
    """Decodes one file to HxWx3 uint8, shrinking so the long side <= max_side.

    With ``short_side`` the image is instead shrunk so its shorter side is
    ``short_side`` (never enlarged), as a model's resize would, and JPEGs are
    decoded at a reduced DCT scale first when that is still large enough.

    Raises:
        CorruptImageError: the file cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if short_side:
                w, h = im.size
                scale = short_side / min(w, h)
                if scale < 1:
                    target = (max(1, round(w * scale)), max(1, round(h * scale)))
                    im.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still >= target
                    im = im.convert("RGB").resize(target, Image.Resampling.BICUBIC, reducing_gap=None)
                else:
                    im = im.convert("RGB")
                return np.asarray(im, dtype=np.uint8).copy()
            im = im.convert("RGB")
            if max_side and max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"cannot decode image {path}: {e}") from e


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class CachedImages(LazyImages):
    """A leaf's images in its ``.npz`` cache file, read one at a time on access."""

    def __init__(self, path: Path, n: int):
        super().__init__(n)
        self.path = path

    def _load(self, k: int) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as z:
            return z[f"img{k}"]


class FileImages(LazyImages):
    """A leaf's (already validated) image files, decoded one at a time on access."""

    def __init__(self, files: Sequence[Path], max_side: int | None, short_side: int | None):
        super().__init__(len(files))
        self.files, self.max_side, self.short_side = list(files), max_side, short_side

    def _load(self, k: int) -> np.ndarray:
        return decode_image(self.files[k], self.max_side, self.short_side)


def _cache_key(files: Sequence[Path], limit: int | None, max_side: int | None, short_side: int | None) -> str:
    stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    extra = () if short_side is None else (("short_side", short_side, "loader", LOADER_VERSION),)
    return hashlib.sha256(repr((limit, max_side, stamp, *extra)).encode()).hexdigest()[:24]


def decode_leaf(files: Sequence[Path], limit: int | None, max_side: int | None, cache_dir: Path | None,
                strict: bool, skipped: list[tuple[str, str]], *, short_side: int | None = None,
                lazy: bool = False) -> Sequence[np.ndarray]:
    """Decodes up to ``limit`` readable images, using an on-disk cache.

    The cache key covers file names, sizes and mtimes, the limit, max_side and
    short_side (with the loader version), so a changed folder is decoded again
    rather than served stale. With ``lazy`` the images are validated (and
    cached) but not kept: a :class:`CachedImages` or :class:`FileImages`
    sequence comes back instead of a list.
    """
    key = _cache_key(files, limit, max_side, short_side)
    cached = cache_dir / f"{key}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            n = int(z["n"])
            bad = list(zip(z["skipped_paths"].tolist(), z["skipped_reasons"].tolist()))
            if strict and bad:
                raise CorruptImageError(f"cannot decode image {bad[0][0]}: {bad[0][1]}")
            skipped.extend(bad)
            return CachedImages(cached, n) if lazy else [z[f"img{i}"] for i in range(n)]
    images, good, bad = [], [], []
    for f in files:
        if limit is not None and len(images) >= limit:
            break
        try:
            images.append(decode_image(f, max_side, short_side))
            good.append(f)
        except CorruptImageError as e:
            if strict:
                raise
            log.warning("%s", e)
            bad.append((str(f), str(e.__cause__ or e)))
    skipped.extend(bad)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, n=len(images), skipped_paths=np.array([b[0] for b in bad], dtype=str),
                 skipped_reasons=np.array([b[1] for b in bad], dtype=str), **{f"img{i}": im for i, im in enumerate(images)})
        os.replace(tmp, cached)  # atomic, so a crash never leaves a half cache
        if lazy:
            return CachedImages(cached, len(images))
    if lazy:
        return FileImages(good, max_side, short_side)
    return images


# -- ImageNet-layout folders ---------------------------------------------------
def load_imagenet_folder(path: str | Path, *, max_per_leaf: int | None = 50, max_side: int | None = 320,
                         cache: bool = True, strict: bool = False, tree: str | Path | None = None,
                         progress: bool = True, lazy: bool = True, short_side: int | None = None) -> Corpus:
    """Loads one folder per synset (ILSVRC ``train/`` or ``val/`` as they are).

    Args:
        path: the folder of synset folders, or its parent holding ``train/`` or ``val/``.
        max_per_leaf: cap on decoded images per leaf.
        max_side: long side of decoded images; the black box resizes anyway.
        cache: keep decoded images under :func:`cache_root` for the next run.
        strict: raise on the first unreadable image instead of skipping and counting it.
        tree: optional parent-edge file grafted onto WordNet (custom nodes).
        lazy: stream images from the cache (or the files) on access instead of
            holding the decoded corpus in memory.
        short_side: store images resized so their shorter side is this (a
            model's pre-crop size) instead of applying ``max_side``.
    """
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    for sub in ("val", "train"):
        if (root / sub).is_dir() and not any(_is_synset_dir(p) for p in root.iterdir()):
            root = root / sub
            break
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise CorpusError(f"{root}: no leaf folders; expected one folder per synset (e.g. n01440764/)")
    base = Hierarchy.from_edges(tree) if tree else None
    names: list[str] = []
    for f in folders:
        if base is not None and f.name in base:
            names.append(f.name)
            continue
        try:
            names.append(normalize_wnid(f.name))
        except HierarchyError as e:
            raise CorpusError(f"{f}: folder name is not a WordNet synset id (and not in the custom tree)") from e
    try:
        if base is not None:
            hierarchy = base.restricted_to(names) if all(n in base for n in names) else _graft(base, names)
        else:
            hierarchy = Hierarchy.from_wordnet(names)
    except HierarchyError as e:
        raise CorpusError(f"{root}: {e}") from e
    cache_dir = cache_root() / "decoded" if cache else None
    skipped: list[tuple[str, str]] = []
    leaves = []

    def one(folder: Path):
        bad: list[tuple[str, str]] = []
        images = decode_leaf(list_images(folder), max_per_leaf, max_side, cache_dir, strict, bad,
                             short_side=short_side, lazy=lazy)
        return images, bad

    # Leaves decode in a thread pool (PIL releases the GIL); results come back in folder order,
    # and with lazy=True each leaf's pixels are dropped as soon as it is validated and cached.
    with ThreadPoolExecutor(max_workers=io_threads(), thread_name_prefix="df-decode") as pool:
        it: Iterable = zip(folders, names, pool.map(one, folders))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(folders), desc=f"decoding {root.name}", unit="leaf")
        for folder, synset, (images, bad) in it:
            skipped.extend(bad)
            if not len(images):
                raise CorpusError(f"{folder}: leaf has no readable images")
            leaves.append(Leaf(synset, hierarchy.name(synset), images, source=str(folder)))
    if skipped:
        log.warning("%d unreadable images skipped in %s", len(skipped), root)
    return Corpus(name=root.name, leaves=leaves, hierarchy=hierarchy, skipped=skipped)


def _is_synset_dir(p: Path) -> bool:
    return p.is_dir() and p.name[:1] == "n" and p.name[1:].isdigit()


def _graft(base: Hierarchy, names: list[str]) -> Hierarchy:
    wn = Hierarchy.from_wordnet([n for n in names if n not in base])
    parents = {**wn.parents, **base.parents}
    return Hierarchy(parents, {**wn.names, **base.names}, names).restricted_to(names)
