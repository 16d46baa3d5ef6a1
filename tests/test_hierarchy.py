"""The WordNet reader and hierarchies, checked against ImageNet synsets from timm."""
from __future__ import annotations

import math

import pytest
import timm.data

from plugin.core.errors import HierarchyError
from plugin.core.hierarchy import ROOT, Hierarchy, WordNet, default_wordnet, normalize_wnid

AIRLINER, WARPLANE = "n02690373", "n04552348"
TABBY, PERSIAN = "n02123045", "n02123394"
GYM_SHOE, SANDAL = "n03472535", "n04133789"


@pytest.fixture(scope="module")
def imagenet_synsets():
    info = timm.data.ImageNetInfo()
    return [info.index_to_label_name(i) for i in range(info.num_classes())]


@pytest.fixture(scope="module")
def imagenet(imagenet_synsets):
    return Hierarchy.from_wordnet(imagenet_synsets)


def _write(tmp_path, text, name="tree.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the WordNet reader ------------------------------------------------------
def test_timm_names_the_classes_we_use(imagenet_synsets):
    info = timm.data.ImageNetInfo()
    assert len(imagenet_synsets) == len(set(imagenet_synsets)) == 1000
    assert info.index_to_description(imagenet_synsets.index(AIRLINER)) == "airliner"
    assert info.index_to_description(imagenet_synsets.index(TABBY)).startswith("tabby")


def test_every_imagenet_synset_resolves(imagenet_synsets):
    wn = default_wordnet()
    info = timm.data.ImageNetInfo()
    for i, wnid in enumerate(imagenet_synsets):
        syn = wn.synset(wnid)
        assert syn.wnid == wnid
        assert syn.lemmas and syn.gloss
        assert syn.hypernyms, wnid  # every ImageNet class sits below something
        # timm's description starts with the first WordNet lemma
        first = info.index_to_description(i).split(",")[0].strip().lower()
        assert first == syn.name.lower(), (wnid, first, syn.name)


def test_synset_fields():
    syn = default_wordnet().synset(AIRLINER)
    assert syn.lemmas == ("airliner",)
    assert syn.name == "airliner"
    assert "passengers" in syn.gloss
    parent = default_wordnet().synset(syn.hypernyms[0])
    assert "airplane" in parent.lemmas


@pytest.mark.parametrize("raw", ["n02690373", "02690373", "2690373", "N02690373", " n02690373 "])
def test_normalize_wnid(raw):
    assert normalize_wnid(raw) == AIRLINER


@pytest.mark.parametrize("raw", ["airliner", "n0269x373", "", "n"])
def test_normalize_wnid_rejects_names(raw):
    with pytest.raises(HierarchyError):
        normalize_wnid(raw)


def test_lookup():
    wn = default_wordnet()
    assert wn.lookup("gym_shoe.n.01") == GYM_SHOE
    assert wn.lookup("gym shoe") == GYM_SHOE
    assert wn.lookup("Gym_Shoe") == GYM_SHOE
    assert wn.lookup("airliner") == AIRLINER
    assert wn.lookup("airliner.n.01") == AIRLINER
    assert wn.lookup(AIRLINER) == AIRLINER
    assert wn.lookup("2690373") == AIRLINER
    # a second sense is a different synset
    assert wn.lookup("galaxy.n.03") != wn.lookup("galaxy.n.01")


@pytest.mark.parametrize("key", ["no_such_thing_xyzzy", "airliner.n.9", "airliner.n.0", "n00000002", "n99999999",
                                 "n02690374"])
def test_unknown_synset_raises(key):
    with pytest.raises(HierarchyError):
        default_wordnet().lookup(key)


def test_unknown_synset_in_tree_raises(imagenet):
    with pytest.raises(HierarchyError):
        default_wordnet().synset("n00000002")
    with pytest.raises(HierarchyError):
        Hierarchy.from_wordnet([AIRLINER, "n99999999"])
    with pytest.raises(HierarchyError):
        imagenet.distance(AIRLINER, "n99999999")
    with pytest.raises(HierarchyError):
        imagenet.name("not_a_node")


def test_missing_wordnet_dir(tmp_path):
    with pytest.raises(HierarchyError, match="wordnet-base"):
        WordNet(tmp_path)


def test_default_wordnet_is_cached():
    assert default_wordnet() is default_wordnet()


# -- the ImageNet tree -------------------------------------------------------
def test_imagenet_tree_shape(imagenet, imagenet_synsets):
    assert imagenet.leaves == imagenet_synsets
    assert len(imagenet.parents) == 1860
    childless = sorted(n for n in imagenet.parents if not imagenet.children[n])
    assert childless == sorted(imagenet_synsets)  # no ImageNet class lies above another
    roots = [n for n, ps in imagenet.parents.items() if not ps]
    assert roots == [ROOT]
    assert imagenet.name(ROOT) == "entity"
    assert all(imagenet.is_ancestor(ROOT, n) for n in imagenet.parents)


@pytest.mark.parametrize("a, b, d", [(AIRLINER, WARPLANE, 3), (TABBY, PERSIAN, 2), (AIRLINER, TABBY, 15)])
def test_imagenet_distances(imagenet, a, b, d):
    assert imagenet.distance(a, b) == d
    assert imagenet.distance(b, a) == d
    assert imagenet.closeness(a, b) == pytest.approx(1 / d)


def test_distance_properties(imagenet):
    nodes = [AIRLINER, WARPLANE, TABBY, PERSIAN, ROOT]
    m = imagenet.distance_matrix(nodes)
    assert m.shape == (5, 5)
    assert (m == m.T).all() and (m.diagonal() == 0).all()
    for i in range(5):
        for j in range(5):
            for k in range(5):
                assert m[i, k] <= m[i, j] + m[j, k]
    assert imagenet.closeness(AIRLINER, AIRLINER) == 1.0
    # distance to a parent is one edge
    parent = imagenet.parents[AIRLINER][0]
    assert imagenet.distance(AIRLINER, parent) == 1
    assert imagenet.depth(AIRLINER) == imagenet.depth(parent) + 1


def test_lca(imagenet):
    lca = imagenet.lca([AIRLINER, WARPLANE])
    assert imagenet.is_ancestor(lca, AIRLINER) and imagenet.is_ancestor(lca, WARPLANE)
    assert lca not in (AIRLINER, WARPLANE)
    # it is the lowest: no child of it lies above both
    assert not any(imagenet.is_ancestor(c, AIRLINER) and imagenet.is_ancestor(c, WARPLANE) for c in imagenet.children[lca])
    # for two leaves in a tree, the path goes through the LCA
    assert imagenet.distance(AIRLINER, lca) + imagenet.distance(lca, WARPLANE) == imagenet.distance(AIRLINER, WARPLANE)
    cat = imagenet.lca([TABBY, PERSIAN])
    assert "cat" in imagenet.name(cat)
    assert imagenet.lca([AIRLINER]) == AIRLINER
    assert imagenet.lca([AIRLINER, TABBY, WARPLANE]) == imagenet.lca([AIRLINER, TABBY])
    with pytest.raises(HierarchyError):
        imagenet.lca([])


def test_related_and_ancestors(imagenet):
    parent = imagenet.parents[AIRLINER][0]
    assert imagenet.related(AIRLINER, parent) and imagenet.related(parent, AIRLINER)
    assert imagenet.related(AIRLINER, AIRLINER)
    assert not imagenet.related(AIRLINER, WARPLANE)
    assert imagenet.is_ancestor(parent, AIRLINER) and not imagenet.is_ancestor(AIRLINER, parent)
    anc = imagenet.ancestors(AIRLINER)
    assert AIRLINER in anc and parent in anc and ROOT in anc and WARPLANE not in anc


def test_restricted_to(imagenet):
    sub = imagenet.restricted_to([AIRLINER, WARPLANE])
    assert sub.leaves == [AIRLINER, WARPLANE]
    assert set(sub.parents) == set(imagenet.ancestors(AIRLINER)) | set(imagenet.ancestors(WARPLANE))
    assert sub.distance(AIRLINER, WARPLANE) == 3
    assert TABBY not in sub


# -- custom trees ------------------------------------------------------------
def test_from_edges_grafts_onto_wordnet(tmp_path):
    path = _write(tmp_path, "# my products\n\nmy_widget\tn03472535\tMy widget\nmy_sandal\tn04133789\n")
    h = Hierarchy.from_edges(path)
    assert sorted(h.leaves) == ["my_sandal", "my_widget"]
    assert h.name("my_widget") == "My widget"
    assert h.name("my_sandal") == "my_sandal"
    assert h.name(GYM_SHOE) == "gym shoe"
    assert h.distance("my_widget", GYM_SHOE) == 1
    assert h.is_ancestor(ROOT, "my_widget")
    wn = Hierarchy.from_wordnet([GYM_SHOE, SANDAL])
    assert h.distance("my_widget", "my_sandal") == wn.distance(GYM_SHOE, SANDAL) + 2
    assert h.lca(["my_widget", "my_sandal"]) == wn.lca([GYM_SHOE, SANDAL])
    assert h.depth("my_widget") == wn.depth(GYM_SHOE) + 1


def test_from_edges_onto_a_base(tmp_path, imagenet):
    path = _write(tmp_path, f"my_widget\t{AIRLINER}\tMy widget\n")
    h = Hierarchy.from_edges(path, base=imagenet)
    assert "my_widget" in h.leaves and AIRLINER not in h.leaves
    assert len(h.leaves) == 1000
    assert len(h.parents) == len(imagenet.parents) + 1
    assert h.distance("my_widget", WARPLANE) == 4
    assert "my_widget" not in imagenet  # the base is not modified


def test_from_edges_custom_roots(tmp_path):
    path = _write(tmp_path, "a\ttop\nb\ttop\nc\tother_top\n")
    h = Hierarchy.from_edges(path)
    assert sorted(h.leaves) == ["a", "b", "c"]
    assert h.distance("a", "b") == 2
    assert h.lca(["a", "b"]) == "top"
    assert math.isinf(h.distance("a", "c"))
    assert h.closeness("a", "c") == 0.0
    assert h.lca(["a", "c"]) is None


@pytest.mark.parametrize("text, match", [
    ("good\tn03472535\nbad_line_without_tab\n", ":2:"),
    ("a\t\n", ":1:"),
    ("\tn03472535\n", ":1:"),
])
def test_from_edges_malformed(tmp_path, text, match):
    with pytest.raises(HierarchyError, match=match):
        Hierarchy.from_edges(_write(tmp_path, text))


@pytest.mark.parametrize("text", [
    "a\tb\nb\tc\nc\ta\n",
    "a\ta\n",
    # WordNet's airplane hung below airliner, which WordNet puts below airplane
    "n02691156\tn02690373\n",
])
def test_from_edges_cycle(tmp_path, text):
    with pytest.raises(HierarchyError, match="cycle"):
        Hierarchy.from_edges(_write(tmp_path, text))


def test_from_edges_errors(tmp_path):
    with pytest.raises(HierarchyError, match="not found"):
        Hierarchy.from_edges(tmp_path / "missing.tsv")
    with pytest.raises(HierarchyError):  # a parent that looks like a synset but is none
        Hierarchy.from_edges(_write(tmp_path, "a\tn99999999\n"))


def test_hierarchy_rejects_missing_leaves():
    with pytest.raises(HierarchyError, match="missing"):
        Hierarchy({"a": ["root"]}, {}, ["a", "ghost"])
