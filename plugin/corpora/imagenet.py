"""ImageNet-layout folders (one folder per synset) and image decoding.

Decoded leaves are cached on disk under :func:`~plugin.core.settings.cache_root`.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from plugin.core.corpus import Corpus, Leaf
from plugin.core.errors import CorpusError, CorruptImageError, HierarchyError
from plugin.core.hierarchy import Hierarchy, normalize_wnid
from plugin.core.settings import cache_root

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


# -- image decoding -----------------------------------------------------------
def decode_image(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Decodes one file to HxWx3 uint8, shrinking so the long side <= max_side.

    Raises:
        CorruptImageError: the file cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if max_side and max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"cannot decode image {path}: {e}") from e


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def decode_leaf(files: Sequence[Path], limit: int | None, max_side: int | None, cache_dir: Path | None,
                strict: bool, skipped: list[tuple[str, str]]) -> list[np.ndarray]:
    """Decodes up to ``limit`` readable images, using an on-disk cache.

    The cache key covers file names, sizes and mtimes, the limit and max_side,
    so a changed folder is decoded again rather than served stale.
    """
    key = hashlib.sha256(repr((limit, max_side, [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])).encode()).hexdigest()[:24]
    cached = cache_dir / f"{key}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            n = int(z["n"])
            bad = list(zip(z["skipped_paths"].tolist(), z["skipped_reasons"].tolist()))
            if strict and bad:
                raise CorruptImageError(f"cannot decode image {bad[0][0]}: {bad[0][1]}")
            skipped.extend(bad)
            return [z[f"img{i}"] for i in range(n)]
    images, bad = [], []
    for f in files:
        if limit is not None and len(images) >= limit:
            break
        try:
            images.append(decode_image(f, max_side))
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
    return images


# -- ImageNet-layout folders ---------------------------------------------------
def load_imagenet_folder(path: str | Path, *, max_per_leaf: int | None = 50, max_side: int | None = 320,
                         cache: bool = True, strict: bool = False, tree: str | Path | None = None,
                         progress: bool = True) -> Corpus:
    """Loads one folder per synset (ILSVRC ``train/`` or ``val/`` as they are).

    Args:
        path: the folder of synset folders, or its parent holding ``train/`` or ``val/``.
        max_per_leaf: cap on decoded images per leaf.
        max_side: long side of decoded images; the black box resizes anyway.
        cache: keep decoded images under :func:`cache_root` for the next run.
        strict: raise on the first unreadable image instead of skipping and counting it.
        tree: optional parent-edge file grafted onto WordNet (custom nodes).
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
    it: Iterable = zip(folders, names)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(list(it), desc=f"decoding {root.name}", unit="leaf")
    for folder, synset in it:
        images = decode_leaf(list_images(folder), max_per_leaf, max_side, cache_dir, strict, skipped)
        if not images:
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
