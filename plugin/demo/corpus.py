"""The embedded demo corpus, built from real offline images only.

Every leaf and its WordNet synset is listed in :data:`DEMO_LEAVES`; the README
table is generated from it (``domain-finder corpus-table``).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plugin.core.corpus import Corpus, Leaf
from plugin.core.errors import CorpusError
from plugin.core.hierarchy import Hierarchy
from plugin.core.settings import fashion_mnist_dir

FASHION_DIR = fashion_mnist_dir()
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_SYNSETS = ["n03595614", "n04489008", "n04021028", "n03236735", "n03057021",
                   "n04133789", "n04197391", "n03472535", "n02773037", "n02872752"]
DIGIT_SYNSETS = ["n13742358", "n13742573", "n13743269", "n13744044", "n13744304",
                 "n13744521", "n13744722", "n13744916", "n13745086", "n13745270"]
# scikit-learn digits: every third image (index % 3 == 0) is corpus; the rest
# trains the `digits` demo model, so the search never sees training images.
DIGITS_CORPUS_MOD = 3


@dataclass(frozen=True)
class DemoLeaf:
    synset: str
    wordnet: str
    source: str
    note: str = ""


DEMO_LEAVES: list[DemoLeaf] = [
    *[DemoLeaf(s, w, f"Fashion-MNIST t10k, label {i} ({c})")
      for i, (s, w, c) in enumerate(zip(FASHION_SYNSETS,
        ["jersey.n.03", "trouser.n.01", "pullover.n.01", "dress.n.01", "coat.n.01", "sandal.n.01",
         "shirt.n.01", "gym_shoe.n.01", "bag.n.01", "boot.n.01"], FASHION_CLASSES))],
    *[DemoLeaf(s, w, f"scikit-learn digits, target {i}, index % 3 == 0")
      for i, (s, w) in enumerate(zip(DIGIT_SYNSETS, ["zero.n.02", "one.n.01", "two.n.01", "three.n.01", "four.n.01",
                                                    "five.n.01", "six.n.01", "seven.n.01", "eight.n.01", "nine.n.01"]))],
    DemoLeaf("n05600637", "face.n.01", "skimage lfw_subset(), first 100 (the faces)", "the other 100 are non-face patches"),
    DemoLeaf("n02123045", "tabby.n.01", "skimage chelsea()", "ImageNet 281"),
    DemoLeaf("n07920052", "espresso.n.01", "skimage coffee()", "ImageNet 967"),
    DemoLeaf("n04099429", "rocket.n.01", "skimage rocket()", "parent of ImageNet 657 missile"),
    DemoLeaf("n09818022", "astronaut.n.01", "skimage astronaut()", "not an ImageNet-1k class"),
    DemoLeaf("n03790512", "motorcycle.n.01", "skimage stereo_motorcycle() left view", "ancestor of ImageNet 665 moped"),
    DemoLeaf("n08271042", "galaxy.n.03", "skimage hubble_deep_field()", "not an ImageNet-1k class"),
    DemoLeaf("n03877845", "palace.n.04", "scikit-learn china.jpg (Summer Palace)", "ImageNet 698"),
    DemoLeaf("n11960245", "dahlia.n.01", "scikit-learn flower.jpg", "a dahlia; ImageNet has only daisy"),
    DemoLeaf("n03763968", "military_uniform.n.01", "matplotlib grace_hopper.jpg", "ImageNet 652"),
]


def read_idx(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file (the MNIST format)."""
    if not path.is_file():
        raise CorpusError(f"{path} not found; install it with `apt-get install dataset-fashion-mnist`")
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images Nx28x28 uint8, labels N)`` for ``train`` or ``t10k``."""
    return read_idx(FASHION_DIR / f"{split}-images-idx3-ubyte.gz"), read_idx(FASHION_DIR / f"{split}-labels-idx1-ubyte.gz")


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 8x8 images (0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)


def _photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data as sd
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = np.asarray(Image.open(fh).convert("RGB"))
    return {
        "n02123045": sd.chelsea(), "n07920052": sd.coffee(), "n04099429": sd.rocket(), "n09818022": sd.astronaut(),
        "n03790512": sd.stereo_motorcycle()[0], "n08271042": sd.hubble_deep_field(), "n03877845": china,
        "n11960245": flower, "n03763968": hopper,
    }


def load_demo_corpus(max_per_leaf: int | None = None, **_ignored) -> Corpus:
    """Builds the demo corpus (about 0.5 s).

    Args:
        max_per_leaf: optional cap on images per leaf (the recipe caps anyway).
    """
    fx, fy = fashion_mnist("t10k")
    dx, dy = sklearn_digits()
    corpus_idx = np.arange(len(dy)) % DIGITS_CORPUS_MOD == 0
    lfw = (np.clip(__import__("skimage.data", fromlist=["lfw_subset"]).lfw_subset()[:100], 0, 1) * 255).round().astype(np.uint8)
    photos = _photos()
    hierarchy = Hierarchy.from_wordnet([d.synset for d in DEMO_LEAVES])
    leaves = []
    for d in DEMO_LEAVES:
        if d.synset in FASHION_SYNSETS:
            imgs = list(fx[fy == FASHION_SYNSETS.index(d.synset)])
        elif d.synset in DIGIT_SYNSETS:
            imgs = list(dx[corpus_idx & (dy == DIGIT_SYNSETS.index(d.synset))])
        elif d.synset == "n05600637":
            imgs = list(lfw)
        else:
            imgs = [photos[d.synset]]
        if max_per_leaf:
            imgs = imgs[:max_per_leaf]
        leaves.append(Leaf(d.synset, hierarchy.name(d.synset), imgs, source=d.source))
    return Corpus("demo", leaves, hierarchy, label_orders={"Fashion-MNIST": list(FASHION_SYNSETS), "digits": list(DIGIT_SYNSETS)})


def corpus_table(corpus: Corpus | None = None) -> str:
    """The Markdown table of every demo leaf, its synset, source and size."""
    corpus = corpus or load_demo_corpus()
    rows = ["| leaf | synset | WordNet | images | source | note |", "|---|---|---|---|---|---|"]
    for d in DEMO_LEAVES:
        leaf = corpus.leaf(d.synset)
        rows.append(f"| {leaf.name} | {d.synset} | {d.wordnet} | {len(leaf)} | {d.source} | {d.note} |")
    return "\n".join(rows)


# -- flat slices of the demo corpus, registered as named auxiliary corpora -----
def _demo_flat(name: str, keep, max_per_leaf: int | None = None) -> Corpus:
    demo = load_demo_corpus(max_per_leaf=max_per_leaf)
    leaves = [Leaf(l.synset, l.name, l.images, source=l.source) for l in demo.leaves if keep(l.synset)]
    orders = {k: v for k, v in demo.label_orders.items() if all(keep(s) for s in v)}
    return Corpus(name=name, leaves=leaves, hierarchy=None, label_orders=orders)


def load_demo_digits_faces(max_per_leaf: int | None = None, **_ignored) -> Corpus:
    """The demo corpus's ten digit leaves and its face leaf as a flat corpus."""
    keep = set(DIGIT_SYNSETS) | {"n05600637"}
    return _demo_flat("demo-digits-faces", keep.__contains__, max_per_leaf)


def load_demo_fashion(max_per_leaf: int | None = None, **_ignored) -> Corpus:
    """The demo corpus's ten Fashion-MNIST leaves as a flat corpus."""
    return _demo_flat("demo-fashion", set(FASHION_SYNSETS).__contains__, max_per_leaf)
