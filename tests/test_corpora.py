"""The demo corpus, ImageNet-layout folders and the corpus registry."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
from PIL import Image

from plugin.core.corpus import Corpus, Leaf
from plugin.core.settings import cache_root
from plugin.corpora import CORPORA, get_corpus, register_corpus
from plugin.corpora.imagenet import load_imagenet_folder
from plugin.demo.corpus import (DEMO_LEAVES, DIGIT_SYNSETS, FASHION_DIR, FASHION_SYNSETS, corpus_table,
                                load_demo_corpus)
from plugin.core.errors import CorpusError, CorruptImageError, UnknownNameError
from plugin.core.hierarchy import Hierarchy, default_wordnet

AIRLINER, WARPLANE, TABBY = "n02690373", "n04552348", "n02123045"


# -- the demo corpus -------------------------------------------------------------
def _idx(path):
    """An independent IDX reader: 16-byte image header, 8-byte label header."""
    data = gzip.open(path, "rb").read()
    return np.frombuffer(data, np.uint8, offset=16 if data[3] == 3 else 8)


def test_demo_leaves_are_the_documented_ones(demo_corpus):
    assert demo_corpus.name == "demo"
    assert demo_corpus.synsets == [d.synset for d in DEMO_LEAVES]
    assert len(demo_corpus.leaves) == len(DEMO_LEAVES) == len({d.synset for d in DEMO_LEAVES})
    assert set(FASHION_SYNSETS) <= set(demo_corpus.synsets) and set(DIGIT_SYNSETS) <= set(demo_corpus.synsets)
    assert all(leaf.source for leaf in demo_corpus.leaves)


def test_demo_leaf_counts(demo_corpus):
    from sklearn.datasets import load_digits

    target = load_digits().target
    corpus_targets = target[np.arange(len(target)) % 3 == 0]
    photos = [d.synset for d in DEMO_LEAVES if d.synset not in FASHION_SYNSETS + DIGIT_SYNSETS + ["n05600637"]]
    assert len(photos) == 9
    for i, s in enumerate(FASHION_SYNSETS):
        assert len(demo_corpus.leaf(s)) == 1000
    for i, s in enumerate(DIGIT_SYNSETS):
        assert len(demo_corpus.leaf(s)) == int((corpus_targets == i).sum()) > 40
    assert len(demo_corpus.leaf("n05600637")) == 100
    for s in photos:
        assert len(demo_corpus.leaf(s)) == 1
    total = sum(len(leaf) for leaf in demo_corpus.leaves)
    assert total == 10 * 1000 + len(corpus_targets) + 100 + len(photos)


def test_demo_images_are_uint8_and_the_real_data(demo_corpus):
    import skimage.data

    for leaf in demo_corpus.leaves:
        for img in leaf.images[:5]:
            assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim in (2, 3)
    images = _idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)
    labels = _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    assert len(images) == len(labels) == 10_000
    for i in (0, 7, 9):
        leaf = demo_corpus.leaf(FASHION_SYNSETS[i])
        assert np.array_equal(np.stack(leaf.images), images[labels == i])
    assert np.array_equal(demo_corpus.leaf("n07920052").images[0], skimage.data.coffee())
    assert np.array_equal(demo_corpus.leaf(TABBY).images[0], skimage.data.chelsea())
    faces = demo_corpus.leaf("n05600637").images
    assert faces[0].shape == (25, 25) and max(int(f.max()) for f in faces) > 200


def test_demo_digits_are_never_training_images(demo_corpus):
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.arange(len(d.target)) % 3 == 0
    for i, s in enumerate(DIGIT_SYNSETS):
        expected = np.round(d.images[keep & (d.target == i)] * 255 / 16).astype(np.uint8)
        assert np.array_equal(np.stack(demo_corpus.leaf(s).images), expected)


def test_demo_hierarchy(demo_corpus):
    h = demo_corpus.hierarchy
    assert sorted(h.leaves) == sorted(demo_corpus.synsets)
    for leaf in demo_corpus.leaves:
        assert leaf.name == h.name(leaf.synset)
    assert demo_corpus.leaf("n03472535").name == "gym shoe"
    # the three footwear leaves are closer to each other than to a digit
    shoes = ["n04133789", "n03472535", "n02872752"]
    assert max(h.distance(a, b) for a in shoes for b in shoes) < min(h.distance(a, DIGIT_SYNSETS[0]) for a in shoes)
    assert demo_corpus.label_orders["Fashion-MNIST"] == FASHION_SYNSETS
    assert demo_corpus.label_orders["digits"] == DIGIT_SYNSETS


@pytest.mark.parametrize("leaf", DEMO_LEAVES, ids=[d.wordnet for d in DEMO_LEAVES])
def test_demo_wordnet_names_resolve(leaf):
    assert default_wordnet().lookup(leaf.wordnet) == leaf.synset


def test_demo_max_per_leaf():
    small = load_demo_corpus(max_per_leaf=3)
    assert [len(leaf) for leaf in small.leaves] == [min(3, len(leaf)) for leaf in load_demo_corpus().leaves]


def test_corpus_table(demo_corpus):
    table = corpus_table(demo_corpus).splitlines()
    assert table[0].startswith("| leaf | synset |")
    rows = table[2:]
    assert len(rows) == len(DEMO_LEAVES)
    for row, d in zip(rows, DEMO_LEAVES):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == d.synset and cells[2] == d.wordnet
        assert int(cells[3]) == len(demo_corpus.leaf(d.synset))
        assert cells[0] == demo_corpus.leaf(d.synset).name


# -- ImageNet-layout folders -------------------------------------------------------
@pytest.fixture()
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("DOMAIN_FINDER_CACHE", str(path))
    assert cache_root() == path
    return path / "decoded"


def _write_jpegs(folder, n, seed, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:03d}.JPEG", quality=95)


@pytest.fixture()
def imagenet_dir(tmp_path):
    root = tmp_path / "ilsvrc"
    _write_jpegs(root / "train" / AIRLINER, 5, seed=1)
    _write_jpegs(root / "train" / WARPLANE, 3, seed=2, size=(500, 250))
    (root / "train" / WARPLANE / "notes.txt").write_text("not an image")
    return root


def test_imagenet_folder_loads(imagenet_dir, cache):
    corpus = load_imagenet_folder(imagenet_dir, max_per_leaf=None, progress=False)
    assert corpus.name == "train"
    assert corpus.synsets == [AIRLINER, WARPLANE]
    assert [len(leaf) for leaf in corpus.leaves] == [5, 3]
    assert corpus.leaf(AIRLINER).name == "airliner" and corpus.leaf(WARPLANE).name == "warplane"
    assert corpus.hierarchy.distance(AIRLINER, WARPLANE) == 3
    assert corpus.skipped == []
    first = corpus.leaf(AIRLINER).images[0]
    assert first.shape == (30, 40, 3) and first.dtype == np.uint8
    with Image.open(imagenet_dir / "train" / AIRLINER / "img_000.JPEG") as im:
        assert np.array_equal(first, np.asarray(im.convert("RGB")))
    # the long side is shrunk to max_side, the aspect ratio kept
    assert corpus.leaf(WARPLANE).images[0].shape == (160, 320, 3)
    # pointing at train/ itself works too
    again = load_imagenet_folder(imagenet_dir / "train", max_per_leaf=None, progress=False, cache=False)
    assert again.synsets == corpus.synsets


def test_max_per_leaf_and_max_side(imagenet_dir, cache):
    corpus = load_imagenet_folder(imagenet_dir, max_per_leaf=2, max_side=100, progress=False)
    assert [len(leaf) for leaf in corpus.leaves] == [2, 2]
    assert max(corpus.leaf(WARPLANE).images[0].shape[:2]) == 100
    assert corpus.leaf(AIRLINER).images[0].shape == (30, 40, 3)  # never enlarged


def test_decoded_images_are_cached(imagenet_dir, cache):
    first = load_imagenet_folder(imagenet_dir, max_per_leaf=4, progress=False)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    second = load_imagenet_folder(imagenet_dir, max_per_leaf=4, progress=False)
    assert sorted(cache.glob("*.npz")) == files and [f.stat().st_mtime_ns for f in files] == stamps
    for a, b in zip(first.leaves, second.leaves):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    # the second load really reads the cache: a marked cache entry comes back as is
    for f in files:
        with np.load(f) as z:
            content = {k: z[k] for k in z.files}
        content["img0"] = np.full_like(content["img0"], 7)
        np.savez(f, **content)
    third = load_imagenet_folder(imagenet_dir, max_per_leaf=4, progress=False)
    assert all((leaf.images[0] == 7).all() for leaf in third.leaves)
    # a different cap, or a changed file, is decoded again rather than served stale
    load_imagenet_folder(imagenet_dir, max_per_leaf=3, progress=False)
    assert len(list(cache.glob("*.npz"))) == 4
    _write_jpegs(imagenet_dir / "train" / AIRLINER, 1, seed=9, size=(41, 30))
    fresh = load_imagenet_folder(imagenet_dir, max_per_leaf=4, progress=False)
    assert fresh.leaf(AIRLINER).images[0].shape == (30, 41, 3)
    assert (fresh.leaf(WARPLANE).images[0] == 7).all()  # an unchanged leaf still comes from the cache
    assert not list(cache.glob("*.tmp*"))


def test_cache_can_be_turned_off(imagenet_dir, cache):
    load_imagenet_folder(imagenet_dir, progress=False, cache=False)
    assert not cache.exists()


@pytest.fixture()
def with_corrupt(imagenet_dir):
    leaf = imagenet_dir / "train" / AIRLINER
    (leaf / "img_001.JPEG").write_bytes(b"this is not a jpeg")
    good = (leaf / "img_003.JPEG").read_bytes()
    (leaf / "img_003.JPEG").write_bytes(good[: len(good) // 3])  # truncated
    return imagenet_dir


def test_corrupt_images_are_counted(with_corrupt, cache):
    corpus = load_imagenet_folder(with_corrupt, max_per_leaf=None, progress=False)
    assert len(corpus.leaf(AIRLINER)) == 3 and len(corpus.leaf(WARPLANE)) == 3
    assert sorted(os.path.basename(p) for p, _ in corpus.skipped) == ["img_001.JPEG", "img_003.JPEG"]
    assert all(reason for _, reason in corpus.skipped)
    # the skipped list survives the cache
    cached = load_imagenet_folder(with_corrupt, max_per_leaf=None, progress=False)
    assert cached.skipped == corpus.skipped


def test_corrupt_images_raise_when_strict(with_corrupt, cache):
    with pytest.raises(CorruptImageError, match="img_001"):
        load_imagenet_folder(with_corrupt, max_per_leaf=None, strict=True, progress=False)
    assert issubclass(CorruptImageError, CorpusError)


def test_strict_is_not_fooled_by_the_cache(with_corrupt, cache):
    load_imagenet_folder(with_corrupt, max_per_leaf=None, progress=False)
    with pytest.raises(CorruptImageError):
        load_imagenet_folder(with_corrupt, max_per_leaf=None, strict=True, progress=False)


def test_leaf_of_only_corrupt_images(tmp_path, cache):
    root = tmp_path / "c"
    _write_jpegs(root / AIRLINER, 2, seed=1)
    (root / WARPLANE).mkdir()
    (root / WARPLANE / "bad.jpg").write_bytes(b"\x00\x01")
    with pytest.raises(CorpusError, match="no readable images"):
        load_imagenet_folder(root, progress=False)


def test_folder_errors(tmp_path, cache):
    with pytest.raises(CorpusError, match="not found"):
        load_imagenet_folder(tmp_path / "missing", progress=False)
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(CorpusError, match="no leaf folders"):
        load_imagenet_folder(tmp_path / "empty_root", progress=False)
    named = tmp_path / "named"
    _write_jpegs(named / AIRLINER, 1, seed=1)
    _write_jpegs(named / "cats", 1, seed=2)
    with pytest.raises(CorpusError, match="cats"):
        load_imagenet_folder(named, progress=False)
    fake = tmp_path / "fake"
    _write_jpegs(fake / "n99999999", 1, seed=1)
    with pytest.raises(ValueError, match="n99999999"):  # synset-shaped but not in WordNet
        load_imagenet_folder(fake, progress=False)
    empty_leaf = tmp_path / "empty_leaf"
    _write_jpegs(empty_leaf / AIRLINER, 1, seed=1)
    (empty_leaf / WARPLANE).mkdir()
    with pytest.raises(CorpusError, match=WARPLANE):
        load_imagenet_folder(empty_leaf, progress=False)


def test_custom_tree_folder(tmp_path, cache):
    root = tmp_path / "shop"
    _write_jpegs(root / "my_widget", 2, seed=1)
    _write_jpegs(root / AIRLINER, 1, seed=2)
    tree = tmp_path / "tree.tsv"
    tree.write_text("my_widget\tn03472535\tMy widget\n")
    corpus = load_imagenet_folder(root, tree=tree, progress=False)
    assert corpus.synsets == ["my_widget", AIRLINER]  # folder order
    assert corpus.leaf("my_widget").name == "My widget"
    h = corpus.hierarchy
    assert h.distance("my_widget", "n03472535") == 1
    assert h.lca(["my_widget", AIRLINER]) == h.lca(["n03472535", AIRLINER])


# -- registry and Corpus -----------------------------------------------------------
def test_get_corpus(imagenet_dir, cache):
    with pytest.raises(UnknownNameError) as err:
        get_corpus("nope")
    assert "nope" in str(err.value) and "demo" in str(err.value)
    assert isinstance(err.value, KeyError)
    by_path = get_corpus(str(imagenet_dir), progress=False, max_per_leaf=2)
    assert by_path.synsets == [AIRLINER, WARPLANE] and len(by_path.leaf(AIRLINER)) == 2
    demo = get_corpus("demo", max_per_leaf=2)
    assert demo.name == "demo" and max(len(leaf) for leaf in demo.leaves) == 2


def test_register_corpus():
    register_corpus("one-photo", lambda **kw: Corpus("one-photo", [Leaf(TABBY, "tabby", [np.zeros((4, 4, 3), np.uint8)])]))
    try:
        assert get_corpus("one-photo").synsets == [TABBY]
        with pytest.raises(UnknownNameError) as err:
            get_corpus("nope")
        assert "one-photo" in str(err.value)
    finally:
        del CORPORA["one-photo"]
    register_corpus("two", lambda **kw: None)
    try:
        assert "two" in CORPORA
    finally:
        del CORPORA["two"]


def test_corpus_without(demo_corpus):
    cut = demo_corpus.without(["n03472535", TABBY])
    assert "n03472535" not in cut.synsets and TABBY not in cut.synsets
    assert len(cut.leaves) == len(demo_corpus.leaves) - 2
    assert cut.name != demo_corpus.name
    assert "n03472535" in cut.hierarchy  # removed leaves stay nameable as domains
    assert "n03472535" in demo_corpus.synsets  # the original is untouched
    with pytest.raises(UnknownNameError):
        cut.leaf("n03472535")
    with pytest.raises(UnknownNameError, match="n99999999"):
        demo_corpus.without(["n99999999"])


def test_corpus_validation():
    img = [np.zeros((4, 4, 3), np.uint8)]
    with pytest.raises(CorpusError, match="empty"):
        Corpus("c", [Leaf(AIRLINER, "a", img), Leaf(WARPLANE, "w", [])])
    with pytest.raises(CorpusError, match="no leaves"):
        Corpus("c", [])
    with pytest.raises(CorpusError, match="twice"):
        Corpus("c", [Leaf(AIRLINER, "a", img), Leaf(AIRLINER, "a", img)])
    with pytest.raises(CorpusError, match="not in the hierarchy"):
        Corpus("c", [Leaf(AIRLINER, "a", img), Leaf(TABBY, "t", img)], Hierarchy.from_wordnet([AIRLINER]))
    ok = Corpus("c", [Leaf(AIRLINER, "a", img * 3)])
    assert ok.summary() == [{"synset": AIRLINER, "name": "a", "images": 3, "source": ""}]
