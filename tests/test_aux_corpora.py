"""Flat auxiliary corpora read from small fixture trees in the real layouts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from plugin.corpora import aux as aux_corpora
from plugin.corpora.aux import (AUX_LOADERS, FLOWERS102_CLASSES, detect_loader, get_aux_corpus, load_flavia,
                                load_flowers102, load_image_folder, read_flavia_table, slug)
from plugin.core.errors import ConfigError, CorpusError, CorruptImageError, UnknownNameError


def write_jpeg(path: Path, seed: int, size=(24, 18)) -> None:
    """A real JPEG: a solid colour from ``seed`` plus noise, so files differ."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    arr = np.clip(base + rng.integers(-20, 21, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def write_corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # The decoded-image cache is shared across tests by default; these
    # fixtures reuse file names, so each test gets its own cache.
    monkeypatch.setenv("DOMAIN_FINDER_CACHE", str(tmp_path / "cache"))


# -- Flavia ----------------------------------------------------------------------
FLAVIA_TABLE = """species,common_name,first,last
Phyllostachys edulis (Carr.) Houz.,pubescent bamboo,1001,1004
Aesculus chinensis,Chinese horse chestnut,1005,1007
"Berberis anhweiensis Ahrendt",Anhui Barberry,1010,1011
"""


def make_flavia(root: Path, table: str = FLAVIA_TABLE, numbers=(1001, 1002, 1003, 1004, 1005, 1006, 1007, 1010, 1011, 1050)):
    for n in numbers:
        write_jpeg(root / f"{n}.jpg", n)
    (root / "species.csv").write_text(table)
    return root


def test_flavia_assigns_images_by_number(tmp_path):
    root = make_flavia(tmp_path / "flavia")
    corpus = load_flavia(root, cache=False)
    assert corpus.hierarchy is None
    assert corpus.synsets == ["phyllostachys_edulis_carr_houz", "aesculus_chinensis", "berberis_anhweiensis_ahrendt"]
    assert [leaf.name for leaf in corpus.leaves] == ["Phyllostachys edulis (Carr.) Houz.", "Aesculus chinensis",
                                                     "Berberis anhweiensis Ahrendt"]
    assert [len(leaf) for leaf in corpus.leaves] == [4, 3, 2]
    # 1050.jpg falls in no range: counted, not silently dropped
    assert [Path(p).name for p, _ in corpus.skipped] == ["1050.jpg"]
    # the first bamboo image really is 1001.jpg (numeric order, decoded pixels)
    assert np.array_equal(corpus.leaves[0].images[0], np.asarray(Image.open(root / "1001.jpg").convert("RGB")))


def test_flavia_range_column_tsv_leaves_subfolder_and_common_names(tmp_path):
    root = tmp_path / "flavia"
    make_flavia(root / "Leaves", table="", numbers=(1001, 1002, 1003))
    (root / "Leaves" / "species.csv").unlink()
    (root / "species.tsv").write_text("Acer palmatum\tJapanese maple\t1001-1002\nCercis chinensis\tChinese redbud\t1003-1003\n")
    corpus = load_flavia(root, name_by="common", cache=False)
    assert corpus.synsets == ["acer_palmatum", "cercis_chinensis"]
    assert [leaf.name for leaf in corpus.leaves] == ["Japanese maple", "Chinese redbud"]
    assert [len(leaf) for leaf in corpus.leaves] == [2, 1]


@pytest.mark.parametrize("table, message", [
    ("species,common_name,first,last\nA a,x,1001,1005\nB b,y,1005,1009\n", "overlap"),
    ("species,common_name,first,last\nA a,x,1009,1001\n", "bad range"),
    ("species,common_name,first,last\nA a,x,10o1,1005\n", "row 1"),
    ("species,common_name,first,last\n", "no rows"),
])
def test_flavia_bad_tables(tmp_path, table, message):
    path = tmp_path / "species.csv"
    path.write_text(table)
    with pytest.raises(CorpusError, match=message):
        read_flavia_table(path)


def test_flavia_missing_table_folder_and_images(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_flavia(tmp_path / "nope")
    root = tmp_path / "flavia"
    write_jpeg(root / "1001.jpg", 1)
    with pytest.raises(CorpusError, match="species table"):
        load_flavia(root, cache=False)
    (root / "species.csv").write_text("A a,x,1001,1001\nB b,y,1002,1009\n")
    with pytest.raises(CorpusError, match="'B b' has no images"):
        load_flavia(root, cache=False)


# -- Oxford Flowers-102 ----------------------------------------------------------
FLOWER_LABELS = [1, 1, 2, 2, 2, 5, 5, 1, 2, 5, 102, 102]  # 1-based, image order
SETID = {"trnid": [1, 3, 6, 11], "valid": [2, 4, 7, 12], "tstid": [5, 8, 9, 10]}


def make_flowers(root: Path, labels=FLOWER_LABELS, n_images=None, setid=True) -> Path:
    """``root/flowers-102`` exactly as torchvision lays it out."""
    base = root / "flowers-102"
    for i in range(1, (n_images or len(labels)) + 1):
        write_jpeg(base / "jpg" / f"image_{i:05d}.jpg", i)
    # Same keys and (1, N) row shapes and integer dtypes as the Oxford files.
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    if setid:
        savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in SETID.items()})
    return base


def test_flowers_all_split(tmp_path):
    make_flowers(tmp_path)
    corpus = load_flowers102(tmp_path, cache=False)
    assert corpus.synsets == ["pink_primrose", "hard_leaved_pocket_orchid", "english_marigold", "blackberry_lily"]
    assert [leaf.name for leaf in corpus.leaves] == ["pink primrose", "hard-leaved pocket orchid", "english marigold",
                                                     "blackberry lily"]
    assert [len(leaf) for leaf in corpus.leaves] == [3, 4, 3, 2]
    assert len(corpus.label_orders["Flowers102"]) == 102
    assert corpus.label_orders["Flowers102"][4] == "english_marigold"
    assert corpus.skipped == []


def test_flowers_split_and_flowers102_folder_path(tmp_path):
    base = make_flowers(tmp_path)
    corpus = load_flowers102(base, split="test", cache=False)  # the flowers-102 folder itself
    # tstid = images 5, 8, 9, 10 with labels 2, 1, 2, 5
    assert {leaf.synset: len(leaf) for leaf in corpus.leaves} == {
        "pink_primrose": 1, "hard_leaved_pocket_orchid": 2, "english_marigold": 1}
    with pytest.raises(ConfigError, match="split"):
        load_flowers102(base, split="training")


def test_flowers_agrees_with_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.flowers102 as tv_flowers

    make_flowers(tmp_path)
    # torchvision checks the md5 of the real .mat files; ours are fixtures, so
    # only that check is relaxed to "file exists". Everything else (paths,
    # keys, 1-based ids, label offset) is torchvision's own code.
    monkeypatch.setattr(tv_flowers, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
    for split in ("train", "val", "test"):
        ds = tv_flowers.Flowers102(str(tmp_path), split=split, download=False)
        corpus = load_flowers102(tmp_path, split=split, cache=False, max_side=None)
        expected: dict[str, list[np.ndarray]] = {}
        for i in range(len(ds)):
            image, label = ds[i]
            expected.setdefault(ds.classes[label], []).append(np.asarray(image))
        got = {leaf.name: list(leaf.images) for leaf in corpus.leaves}
        assert sorted(got) == sorted(expected)
        for name, images in expected.items():
            assert len(got[name]) == len(images)
            assert all(np.array_equal(a, b) for a, b in zip(got[name], images))


def test_embedded_class_names_match_torchvision():
    from torchvision.datasets import Flowers102

    if not hasattr(Flowers102, "classes"):
        pytest.skip("this torchvision has no Flowers102.classes")
    assert list(FLOWERS102_CLASSES) == list(Flowers102.classes)
    assert len({slug(c) for c in FLOWERS102_CLASSES}) == 102


def test_flowers_missing_labels_file(tmp_path):
    base = make_flowers(tmp_path)
    (base / "imagelabels.mat").unlink()
    with pytest.raises(CorpusError, match="imagelabels.mat"):
        load_flowers102(tmp_path, cache=False)


def test_flowers_missing_everything_says_how_to_get_it(tmp_path, monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("must not download unless download=True")

    monkeypatch.setattr(aux_corpora, "_download_flowers", no_download)
    with pytest.raises(CorpusError, match="download=True"):
        load_flowers102(tmp_path, cache=False)


def test_flowers_label_count_mismatch(tmp_path):
    make_flowers(tmp_path, n_images=len(FLOWER_LABELS) - 1)
    with pytest.raises(CorpusError, match="12 labels but .* 11"):
        load_flowers102(tmp_path, cache=False)


def test_flowers_bad_label_values(tmp_path):
    make_flowers(tmp_path, labels=[1, 0, 103])
    with pytest.raises(CorpusError, match="1..102"):
        load_flowers102(tmp_path, cache=False)


def test_flowers_split_without_setid(tmp_path):
    make_flowers(tmp_path, setid=False)
    assert len(load_flowers102(tmp_path, cache=False).leaves) == 4  # "all" needs no setid.mat
    with pytest.raises(CorpusError, match="setid.mat"):
        load_flowers102(tmp_path, split="train", cache=False)


def test_flowers_download_delegates_to_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFlowers:
        def __init__(self, root, split="train", download=False):
            calls.append((root, download))
            make_flowers(Path(root))

    monkeypatch.setattr(torchvision.datasets, "Flowers102", FakeFlowers)
    corpus = load_flowers102(tmp_path / "flowers-102", download=True, cache=False)
    assert calls == [(str(tmp_path), True)]
    assert len(corpus.leaves) == 4


# -- ImageFolder and corrupt images -----------------------------------------------
def make_image_folder(root: Path, classes=("golden_retriever", "tabby-cat", "airliner"), per_class=3):
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_jpeg(root / name / f"{i}.jpg", 100 * c + i, size=(60, 40))
    return root


def test_image_folder(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    (root / "README.txt").write_text("ignored")
    corpus = load_image_folder(root, max_per_leaf=2, max_side=30, cache=False)
    assert corpus.synsets == ["airliner", "golden_retriever", "tabby-cat"]
    assert [leaf.name for leaf in corpus.leaves] == ["airliner", "golden retriever", "tabby cat"]
    assert [len(leaf) for leaf in corpus.leaves] == [2, 2, 2]
    assert corpus.leaves[0].images[0].shape == (20, 30, 3)


def test_image_folder_malformed(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    write_jpeg(tmp_path / "flat" / "a.jpg", 1)
    with pytest.raises(CorpusError, match="no class folders"):
        load_image_folder(tmp_path / "flat")
    root = make_image_folder(tmp_path / "pets")
    (root / "empty_class").mkdir()
    with pytest.raises(CorpusError, match="empty class.*empty_class.*has no image files"):
        load_image_folder(root, cache=False)


@pytest.mark.parametrize("loader", ["imagefolder", "flavia"])
def test_corrupt_image_skipped_or_strict(tmp_path, loader):
    if loader == "imagefolder":
        root = make_image_folder(tmp_path / "pets")
        bad = root / "airliner" / "1.jpg"
        load = load_image_folder
    else:
        root = make_flavia(tmp_path / "flavia")
        bad = root / "1002.jpg"
        load = load_flavia
    write_corrupt(bad)
    corpus = load(root)
    assert str(bad) in [p for p, _ in corpus.skipped]
    first = corpus.leaves[0]
    assert len(first) == (2 if loader == "imagefolder" else 3)
    # served from the decoded-image cache, the skip is still reported
    again = load(root)
    assert str(bad) in [p for p, _ in again.skipped]
    assert [len(l) for l in again.leaves] == [len(l) for l in corpus.leaves]
    with pytest.raises(CorruptImageError, match=bad.name):
        load(root, strict=True, cache=False)


def test_all_images_corrupt_is_an_error(tmp_path):
    root = make_image_folder(tmp_path / "pets", per_class=1)
    write_corrupt(root / "airliner" / "0.jpg")
    with pytest.raises(CorpusError, match="no readable images"):
        load_image_folder(root, cache=False)


# -- spec parsing and detection ----------------------------------------------------
def test_get_aux_corpus_detects_layouts(tmp_path):
    make_flowers(tmp_path / "tv")
    make_flavia(tmp_path / "flavia")
    make_image_folder(tmp_path / "pets")
    assert detect_loader(tmp_path / "tv") == "flowers102"
    assert detect_loader(tmp_path / "tv" / "flowers-102") == "flowers102"
    assert detect_loader(tmp_path / "flavia") == "flavia"
    assert detect_loader(tmp_path / "pets") == "imagefolder"
    label, corpus = get_aux_corpus(f"blooms={tmp_path / 'tv'}", cache=False)
    assert label == "blooms" and corpus.name == "flowers102-all"
    label, corpus = get_aux_corpus(f"leaves={tmp_path / 'flavia'}", cache=False)
    assert label == "leaves" and corpus.synsets[0] == "phyllostachys_edulis_carr_houz"
    label, corpus = get_aux_corpus(str(tmp_path / "pets"), cache=False)
    assert label == "pets" and len(corpus.leaves) == 3


def test_get_aux_corpus_explicit_loader_and_errors(tmp_path):
    make_flavia(tmp_path / "flavia")
    # forcing imagefolder on a Flavia tree: no class folders there
    with pytest.raises(CorpusError, match="no class folders"):
        get_aux_corpus(f"imagefolder:x={tmp_path / 'flavia'}")
    label, corpus = get_aux_corpus(f"flavia:x={tmp_path / 'flavia'}", cache=False)
    assert label == "x" and len(corpus.leaves) == 3
    with pytest.raises(UnknownNameError, match="flavia.*flowers102.*imagefolder"):
        get_aux_corpus(f"cifar:x={tmp_path}")
    with pytest.raises(ConfigError, match="LABEL=PATH"):
        get_aux_corpus(f"={tmp_path}")
    assert set(AUX_LOADERS) == {"flavia", "flowers102", "imagefolder"}


def test_flavia_table_range_forms(tmp_path):
    path = tmp_path / "species.tsv"
    path.write_text("Scientific name\tCommon name\tFilename\nAcer palmatum\tJapanese maple\t1001 \u2013 1059\n"
                    "Cercis chinensis\tChinese redbud\t1060-1122\n", encoding="utf-8")
    rows = read_flavia_table(path)
    assert [(r.species, r.first, r.last) for r in rows] == [("Acer palmatum", 1001, 1059), ("Cercis chinensis", 1060, 1122)]
