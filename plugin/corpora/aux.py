"""Flat auxiliary corpora: labelled image sets with no tree over them.

Each loader reads one real on-disk layout (Flavia leaves, Oxford Flowers-102
as torchvision stores it, any ImageFolder) into a :class:`~plugin.corpora.Corpus`
with ``hierarchy=None``; leaf ids are free-form class ids. All share the
knobs of :func:`plugin.corpora.load_imagenet_folder`: ``max_per_leaf``,
``max_side``, ``cache`` (the decoded-image cache) and ``strict`` (raise on
the first unreadable image instead of skipping it into ``corpus.skipped``).
"""
from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from plugin.core.corpus import Corpus, Leaf
from plugin.core.settings import cache_root
from plugin.corpora.imagenet import decode_leaf, list_images
from plugin.core.registry import Registry
from plugin.core.errors import ConfigError, CorpusError, UnknownNameError

log = logging.getLogger(__name__)

# The Oxford 102 class names in label order (label 1 is "pink primrose"), as
# torchvision's ``Flowers102.classes`` has them; embedded so old torchvision
# versions without that attribute still name the leaves.
FLOWERS102_CLASSES: tuple[str, ...] = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink-yellow dahlia?", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen",
    "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper",
    "blackberry lily",
)
FLOWERS102_SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}
FLAVIA_TABLE_NAMES = ("species.csv", "species.tsv", "species.txt")


def slug(text: str) -> str:
    """A leaf id from a name: lowercase ASCII words joined by ``_``."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not s:
        raise CorpusError(f"cannot make a leaf id from {text!r}")
    return s


def _build(name: str, groups: Sequence[tuple[str, str, list[Path], str]], *, max_per_leaf: int | None,
           max_side: int | None, cache: bool, strict: bool, skipped: list[tuple[str, str]],
           label_orders: dict[str, list[str]] | None = None, progress: bool = False) -> Corpus:
    """Decodes ``(leaf id, leaf name, files, source)`` groups into a flat corpus."""
    cache_dir = cache_root() / "decoded" if cache else None
    unused = len(skipped)  # files no class claims, recorded by the caller
    it: Iterable = groups
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(list(groups), desc=f"decoding {name}", unit="leaf")
    leaves = []
    for leaf_id, leaf_name, files, source in it:
        if not files:
            raise CorpusError(f"{name}: class {leaf_name!r} ({source}) has no image files")
        images = decode_leaf(files, max_per_leaf, max_side, cache_dir, strict, skipped)
        if not images:
            raise CorpusError(f"{name}: class {leaf_name!r} ({source}) has no readable images")
        leaves.append(Leaf(leaf_id, leaf_name, images, source=source))
    if len(skipped) > unused:
        log.warning("%d unreadable images skipped in %s", len(skipped) - unused, name)
    return Corpus(name=name, leaves=leaves, hierarchy=None, label_orders=label_orders or {}, skipped=skipped)


# -- Flavia ----------------------------------------------------------------------
@dataclass(frozen=True)
class FlaviaSpecies:
    """One row of the Flavia species table: images ``first..last`` inclusive."""

    species: str
    common_name: str
    first: int
    last: int


def read_flavia_table(path: str | Path) -> list[FlaviaSpecies]:
    """Reads a Flavia species table (format in :func:`load_flavia`).

    Raises:
        CorpusError: unreadable rows, bad or overlapping ranges.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Flavia species table not found: {path}")
    text = path.read_text(encoding="utf-8-sig").replace("\u2013", "-")  # en dash, as web tables print ranges
    # TSV when the file has tabs (copied from the site's table), else CSV.
    delimiter = "\t" if "\t" in text else ","
    rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if r and any(c.strip() for c in r)]
    rows = [r for r in rows if not r[0].lstrip().startswith("#")]
    if rows and _is_header(rows[0]):
        rows = rows[1:]
    out: list[FlaviaSpecies] = []
    for n, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        try:
            if len(cells) == 3 and "-" in cells[2]:  # the site's "1001-1059" form
                lo, hi = cells[2].split("-", 1)
                first, last = int(lo), int(hi)
            elif len(cells) == 4:
                first, last = int(cells[2]), int(cells[3])
            else:
                raise ValueError(f"expected 4 columns species,common_name,first,last; got {len(cells)}")
        except ValueError as e:
            raise CorpusError(f"{path}: data row {n} {row!r}: {e}") from e
        if not cells[0]:
            raise CorpusError(f"{path}: data row {n} has no species name")
        if first > last or first < 0:
            raise CorpusError(f"{path}: data row {n} ({cells[0]}): bad range {first}-{last}")
        out.append(FlaviaSpecies(cells[0], cells[1], first, last))
    if not out:
        raise CorpusError(f"{path}: species table has no rows")
    ordered = sorted(out, key=lambda s: s.first)
    for a, b in zip(ordered, ordered[1:]):
        if b.first <= a.last:
            raise CorpusError(f"{path}: ranges overlap: {a.species} {a.first}-{a.last} and "
                              f"{b.species} {b.first}-{b.last}")
    return out


def _is_header(row: Sequence[str]) -> bool:
    # A data row ends in a number or a range; a header ("last", "range") has no digit.
    return not any(ch.isdigit() for ch in row[-1])


def _flavia_images_dir(root: Path) -> Path:
    # The Flavia archive unpacks to ``Leaves/``; accept it or its parent.
    if not list_images(root) and (root / "Leaves").is_dir():
        return root / "Leaves"
    return root


def _find_flavia_table(root: Path) -> Path | None:
    for folder in dict.fromkeys((root, _flavia_images_dir(root))):
        for name in FLAVIA_TABLE_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def load_flavia(path: str | Path, *, table: str | Path | None = None, name_by: str = "species",
                max_per_leaf: int | None = 50, max_side: int | None = 320, cache: bool = True,
                strict: bool = False, progress: bool = False) -> Corpus:
    """Loads the Flavia leaf dataset: numbered JPEGs plus a species table.

    The images are ``1001.jpg`` ... ``3621.jpg`` in ``path`` (or in
    ``path/Leaves/``, as the archive unpacks). The table is a CSV or TSV file,
    by default ``species.csv``/``.tsv``/``.txt`` in ``path`` or next to the
    images, with an optional header row and one row per species::

        species,common_name,first,last
        Phyllostachys edulis (Carr.) Houz.,pubescent bamboo,1001,1059
        Aesculus chinensis,Chinese horse chestnut,1060,1122

    A three-column form ``species,common_name,1001-1059`` (the range as the
    Flavia site prints it) is accepted too. Ranges are inclusive and must not
    overlap. Images whose number falls in no range, or whose name is not a
    number, go to ``corpus.skipped``.

    Args:
        path: the image folder.
        table: the species table, if not in the default place.
        name_by: leaf names from ``"species"`` (scientific) or ``"common"``.
            Leaf ids are always a slug of the scientific name.
        max_per_leaf, max_side, cache, strict, progress: as in
            :func:`plugin.corpora.load_imagenet_folder`.

    Raises:
        CorpusError: missing folder or table, bad table, a species without images.
    """
    if name_by not in ("species", "common"):
        raise ConfigError(f"name_by must be 'species' or 'common', not {name_by!r}")
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(f"Flavia folder not found: {root}")
    table_path = Path(table) if table is not None else _find_flavia_table(root)
    if table_path is None:
        raise CorpusError(f"{root}: no Flavia species table ({' / '.join(FLAVIA_TABLE_NAMES)}); "
                          "write one with columns species,common_name,first,last or pass table=")
    species = read_flavia_table(table_path)
    images_dir = _flavia_images_dir(root)
    files: dict[str, list[tuple[int, Path]]] = {slug(s.species): [] for s in species}
    ranges = sorted((s.first, s.last, slug(s.species)) for s in species)
    skipped: list[tuple[str, str]] = []
    for f in list_images(images_dir):
        if not f.stem.isdigit():
            skipped.append((str(f), "file name is not a Flavia image number"))
            continue
        number = int(f.stem)
        owner = next((sid for lo, hi, sid in ranges if lo <= number <= hi), None)
        if owner is None:
            skipped.append((str(f), f"no species in {table_path.name} covers number {number}"))
            continue
        files[owner].append((number, f))
    if skipped:
        log.warning("%d Flavia files match no species in %s", len(skipped), table_path)
    groups, seen = [], set()
    for s in species:
        sid = slug(s.species)
        if sid in seen:  # a species listed over several rows is one leaf
            continue
        seen.add(sid)
        members = [f for _, f in sorted(files[sid])]
        if not members:
            raise CorpusError(f"{images_dir}: Flavia species {s.species!r} has no images numbered {s.first}-{s.last}")
        name = s.common_name if name_by == "common" and s.common_name else s.species
        groups.append((sid, name, members, f"{images_dir} #{s.first}-{s.last}"))
    return _build(f"flavia:{images_dir.name}", groups, max_per_leaf=max_per_leaf, max_side=max_side,
                  cache=cache, strict=strict, skipped=skipped, progress=progress)


# -- Oxford Flowers-102 ------------------------------------------------------------
def _flowers_base(root: Path) -> Path | None:
    for base in (root / "flowers-102", root):
        if (base / "imagelabels.mat").is_file() or (base / "jpg").is_dir():
            return base
    return None


def _loadmat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    if not path.is_file():
        raise CorpusError(f"Flowers-102 file missing: {path}; {_FLOWERS_HOWTO}")
    try:
        data = loadmat(path, squeeze_me=True)
    except (ValueError, OSError, TypeError, NotImplementedError) as e:
        raise CorpusError(f"cannot read {path}: {e}") from e
    if key not in data:
        raise CorpusError(f"{path}: no {key!r} array (found {sorted(k for k in data if not k.startswith('__'))})")
    arr = np.atleast_1d(np.asarray(data[key])).ravel()
    if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
        raise CorpusError(f"{path}: {key!r} holds non-integer values")
    return arr.astype(np.int64)


_FLOWERS_HOWTO = ("get 102flowers.tgz, imagelabels.mat and setid.mat from "
                  "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into <root>/flowers-102/ "
                  "(tgz unpacked to jpg/), or call load_flowers102(root, download=True)")


def load_flowers102(path: str | Path, split: str = "all", *, download: bool = False,
                    max_per_leaf: int | None = 50, max_side: int | None = 320, cache: bool = True,
                    strict: bool = False, progress: bool = False) -> Corpus:
    """Loads Oxford Flowers-102 in torchvision's layout.

    ``path/flowers-102/`` (or ``path`` itself) holds ``jpg/image_00001.jpg`` ...,
    ``imagelabels.mat`` (``labels``: one 1-based class per image, in image
    order) and ``setid.mat`` (``trnid``/``valid``/``tstid``: 1-based image ids).
    Leaf ids are slugs of the class names (``pink_primrose``); the corpus's
    ``label_orders["Flowers102"]`` lists all 102 in label order.

    Args:
        path: the torchvision root or the ``flowers-102`` folder.
        split: ``"all"`` (every labelled image, no ``setid.mat`` needed),
            ``"train"``, ``"val"`` or ``"test"``.
        download: fetch the files through ``torchvision.datasets.Flowers102``
            if missing; never happens otherwise.
        max_per_leaf, max_side, cache, strict, progress: as in
            :func:`plugin.corpora.load_imagenet_folder`.

    Raises:
        CorpusError: missing files, labels that disagree with the images, bad ids.
    """
    if split != "all" and split not in FLOWERS102_SPLITS:
        raise ConfigError(f"unknown Flowers-102 split {split!r}; use one of {['all', *FLOWERS102_SPLITS]}")
    root = Path(path)
    if root.name == "flowers-102" and not (root / "flowers-102").exists():
        tv_root = root.parent
    else:
        tv_root = root
    if download:
        _download_flowers(tv_root)
    base = _flowers_base(root)
    if base is None:
        raise CorpusError(f"Flowers-102 not found under {root} (no imagelabels.mat or jpg/); {_FLOWERS_HOWTO}")
    jpg = base / "jpg"
    if not jpg.is_dir():
        raise CorpusError(f"Flowers-102 image folder missing: {jpg}; {_FLOWERS_HOWTO}")
    labels = _loadmat(base / "imagelabels.mat", "labels")
    present = {int(m.group(1)): f for f in jpg.iterdir() if (m := re.fullmatch(r"image_(\d+)\.jpg", f.name))}
    if len(labels) != len(present):
        raise CorpusError(f"{base}: imagelabels.mat has {len(labels)} labels but {jpg} has {len(present)} "
                          "image_NNNNN.jpg files; the download is incomplete or mixed")
    bad = labels[(labels < 1) | (labels > len(FLOWERS102_CLASSES))]
    if bad.size:
        raise CorpusError(f"{base}/imagelabels.mat: labels must be 1..{len(FLOWERS102_CLASSES)}, found {sorted(set(bad.tolist()))[:5]}")
    if split == "all":
        ids = np.arange(1, len(labels) + 1)
    else:
        ids = _loadmat(base / "setid.mat", FLOWERS102_SPLITS[split])
        out_of_range = ids[(ids < 1) | (ids > len(labels))]
        if out_of_range.size:
            raise CorpusError(f"{base}/setid.mat: {FLOWERS102_SPLITS[split]} has image ids outside 1..{len(labels)}: "
                              f"{out_of_range[:5].tolist()}")
    missing = [int(i) for i in ids if int(i) not in present]
    if missing:
        raise CorpusError(f"{jpg}: labelled images missing, e.g. image_{missing[0]:05d}.jpg ({len(missing)} in all)")
    by_class: dict[int, list[Path]] = {}
    for i in sorted(int(i) for i in ids):
        by_class.setdefault(int(labels[i - 1]), []).append(present[i])
    order = [slug(c) for c in FLOWERS102_CLASSES]
    groups = [(order[c - 1], FLOWERS102_CLASSES[c - 1], by_class[c], f"{jpg} label {c}") for c in sorted(by_class)]
    return _build(f"flowers102-{split}", groups, max_per_leaf=max_per_leaf, max_side=max_side, cache=cache,
                  strict=strict, skipped=[], label_orders={"Flowers102": order}, progress=progress)


def _download_flowers(tv_root: Path) -> None:
    try:
        from torchvision.datasets import Flowers102
    except ImportError as e:
        raise CorpusError(f"download=True needs torchvision; otherwise {_FLOWERS_HOWTO}") from e
    try:
        Flowers102(str(tv_root), split="train", download=True)
    except (RuntimeError, OSError) as e:  # URLError is an OSError
        raise CorpusError(f"Flowers-102 download into {tv_root} failed: {e}") from e


# -- ImageFolder -------------------------------------------------------------------
def load_image_folder(path: str | Path, *, max_per_leaf: int | None = 50, max_side: int | None = 320,
                      cache: bool = True, strict: bool = False, progress: bool = False) -> Corpus:
    """Loads any ImageFolder tree: one subfolder of images per class.

    Leaf ids are the folder names; leaf names the folder names with ``_`` and
    ``-`` read as spaces. Hidden folders are ignored.

    Raises:
        CorpusError: missing folder, no class folders, or an empty class folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(f"image folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise CorpusError(f"{root}: no class folders; expected one subfolder of images per class")
    groups = [(f.name, re.sub(r"[_\-]+", " ", f.name).strip() or f.name, list_images(f), str(f)) for f in folders]
    return _build(root.name, groups, max_per_leaf=max_per_leaf, max_side=max_side, cache=cache, strict=strict,
                  skipped=[], progress=progress)


# -- registry --------------------------------------------------------------------
AUX_LOADERS: Registry[Callable[..., Corpus]] = Registry("auxiliary corpus loader")
AUX_LOADERS.register("flavia", load_flavia)
AUX_LOADERS.register("flowers102", load_flowers102)
AUX_LOADERS.register("imagefolder", load_image_folder)


def detect_loader(path: str | Path) -> str:
    """The loader name for a folder: flowers102, flavia, else imagefolder."""
    root = Path(path)
    if (root / "imagelabels.mat").is_file() or (root / "flowers-102" / "imagelabels.mat").is_file():
        return "flowers102"
    if root.is_dir() and _find_flavia_table(root) is not None:
        return "flavia"
    return "imagefolder"


# -- named auxiliary corpora ---------------------------------------------------------
# Ready-made flat corpora that need no path: ``get_aux_corpus("demo-fashion")``.
# Each builder takes ``max_per_leaf`` and ignores the other loader knobs. The
# demo registers its own through the ``domain_finder.aux_corpora`` entry points.
NAMED_AUX_CORPORA: Registry[Callable[..., Corpus]] = Registry("named auxiliary corpus", group="domain_finder.aux_corpora")
NAMED_LOADER = "named"  # ``named:LABEL=NAME`` forces a named corpus


def _valid_names() -> str:
    return f"valid loaders: {AUX_LOADERS.names()}; named corpora: {NAMED_AUX_CORPORA.names()}"


def get_aux_corpus(spec: str, **kwargs) -> tuple[str, Corpus]:
    """Loads an auxiliary corpus from ``[LOADER:]LABEL=PATH`` or a corpus name.

    ``LABEL`` is a free name for the corpus in reports; ``LOADER`` is one of
    :data:`AUX_LOADERS` and, when left out, is detected from the layout
    (:func:`detect_loader`). A bare ``PATH`` is labelled by its folder name.
    ``PATH`` may instead be one of :data:`NAMED_AUX_CORPORA` (``demo-fashion``,
    ``demo-digits-faces``), bare or as ``LABEL=NAME``, when no folder of that
    name exists; ``named:LABEL=NAME`` insists on the registry.

    Returns:
        ``(label, corpus)``.

    Raises:
        ConfigError: the spec has an empty label or path.
        UnknownNameError: ``LOADER`` (or, with ``named:``, ``NAME``) is not
            registered; the message lists the valid loaders and named corpora.
    """
    loader_name: str | None = None
    if "=" in spec:
        left, path = spec.split("=", 1)
        if ":" in left:
            loader_name, label = (s.strip() for s in left.split(":", 1))
        else:
            label = left.strip()
    else:
        path, label = spec, Path(spec).name
    path = path.strip()
    if not label or not path:
        raise ConfigError(f"auxiliary corpus spec {spec!r}: expected [LOADER:]LABEL=PATH or a named corpus; "
                          + _valid_names())
    if loader_name == NAMED_LOADER or (loader_name is None and path in NAMED_AUX_CORPORA and not Path(path).is_dir()):
        if path not in NAMED_AUX_CORPORA:
            raise UnknownNameError(f"unknown named auxiliary corpus {path!r}; {_valid_names()}")
        log.info("auxiliary corpus %r: named corpus %s", label, path)
        return label, NAMED_AUX_CORPORA.get(path)(max_per_leaf=kwargs.get("max_per_leaf"))
    if loader_name is None:
        loader_name = detect_loader(path)
    elif loader_name not in AUX_LOADERS:
        raise UnknownNameError(f"unknown auxiliary corpus loader {loader_name!r}; {_valid_names()}")
    log.info("auxiliary corpus %r: %s loader on %s", label, loader_name, path)
    return label, AUX_LOADERS.get(loader_name)(path, **kwargs)
