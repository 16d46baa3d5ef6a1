"""The search at ImageNet scale: vectorised tree distances, the tensor pipeline, the adaptive pass, lazy leaves.

Timings live in benchmarks/imagenet_scale.py; these tests check behaviour.
"""
from __future__ import annotations

import importlib.util
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
import skimage.data
from PIL import Image

from plugin.core.blackbox import CountingBlackBox, InputSpec, TensorBlackBox
from plugin.core.corpus import Corpus, Leaf
from plugin.core.errors import ConfigError
from plugin.core.hierarchy import Hierarchy
from plugin.core.recipe import Recipe
from plugin.core.scores import effective_min_samples, functional_scores, wilson_lower_bound, wilson_upper_bound
from plugin.core.search import search
from plugin.core.transforms import expand_leaf, expand_to_input
from plugin.corpora.imagenet import CachedImages, FileImages, load_imagenet_folder
from plugin.models.torch_blackbox import Preprocessing

ROOT = Path(__file__).resolve().parents[1]
LITE0 = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3}


def _bench():
    spec = importlib.util.spec_from_file_location("imagenet_scale", ROOT / "benchmarks" / "imagenet_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bfs(h: Hierarchy, src: str) -> dict[str, int]:
    dist, queue = {src: 0}, deque([src])
    while queue:
        n = queue.popleft()
        for x in (*h.parents[n], *h.children[n]):
            if x not in dist:
                dist[x] = dist[n] + 1
                queue.append(x)
    return dist


def test_vectorised_distances_equal_a_plain_bfs():
    leaves = ["n02690373", "n04552348", "n02123045", "n02123394", "n04133789", "n03595614", "n13742358"]
    h = Hierarchy.from_wordnet(leaves)
    m = h.distance_matrix(leaves)
    for a, src in enumerate(leaves):
        d = _bfs(h, src)
        assert [m[a, b] for b in range(len(leaves))] == [d[t] for t in leaves]
    inner = list(h.parents)[:5]
    assert h.distance_matrix(leaves[:2], inner).shape == (2, 5)
    assert h.distance(leaves[0], leaves[1]) == 3 and h.closeness(leaves[0], leaves[0]) == 1.0


def test_tensor_path_equals_the_models_own_preprocessing():
    """No distortion: the batched pipeline builds exactly what the model's eval transform would."""
    pre = Preprocessing.from_pretrained_cfg(LITE0)
    spec = InputSpec((224, 224), 0.875, "center", "bicubic", (0.5,) * 3, (0.5,) * 3)
    images = [skimage.data.coffee(), skimage.data.camera(), np.full((28, 28), 90, np.uint8)]
    recipe = Recipe(noise=0, translate=0, rotate=0, perspective=0, transforms_per_image=2)
    out = expand_to_input([(images, 0, 0)], recipe, spec)
    ref = pre(images)
    assert out.shape == (9, 3, 224, 224)
    for i in range(3):
        for c in range(3):
            assert float((out[3 * i + c] - ref[i]).abs().max()) < 1e-3


def test_batched_resize_equals_one_image_at_a_time():
    """Small images go one interpolate call per shape, large ones alone; neither changes a pixel."""
    from plugin.core.transforms import resize_batch, resize_to_spec

    rng = np.random.default_rng(1)
    spec = InputSpec((32, 32), 0.875, "center", "bicubic", (0.5,) * 3, (0.5,) * 3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
              [(28, 28, 3), (40, 30, 3), (28, 28, 3), (375, 500, 3), (28, 28), (40, 30, 3)]]
    images[2].flags.writeable = False  # as a cached corpus hands them out
    batched = resize_batch(images, spec)
    assert [tuple(t.shape) for t in batched] == [tuple(resize_to_spec(im, spec).shape) for im in images]
    assert all(torch.equal(b, resize_to_spec(im, spec)) for b, im in zip(batched, images))
    assert batched[3].shape == (3, 36, 48) and batched[4].shape == (3, 36, 36)  # grey becomes RGB


def test_tensor_path_distorts_and_is_seeded():
    spec = InputSpec((32, 32), 0.875, "center", "bilinear", (0.5,) * 3, (0.5,) * 3)
    img = skimage.data.astronaut()
    recipe = Recipe()
    a = expand_to_input([([img], 1, 0)], recipe, spec)
    b = expand_to_input([([img], 1, 0)], recipe, spec)
    c = expand_to_input([([img], 2, 0)], recipe, spec)
    assert a.shape == (4, 3, 32, 32) and bool((a == b).all())
    assert not bool((a[1:] == c[1:]).all()) and bool((a[0] == c[0]).all())  # copy 0 is the original
    assert all(float((a[k] - a[0]).abs().mean()) > 0.01 for k in range(1, 4))


def test_one_shape_fast_path_equals_the_mixed_shape_path():
    """Images of one shape skip the per-image canvas loop; the copies are the same as with padding."""
    spec = InputSpec((32, 32), 0.875, "center", "bilinear", (0.5,) * 3, (0.5,) * 3)
    rng = np.random.default_rng(3)
    same = [rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for _ in range(3)]
    recipe = Recipe(noise=0)
    alone = expand_to_input([(same, 4, 0)], recipe, spec)
    mixed = expand_to_input([(same + [rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)], 4, 0)], recipe, spec)
    assert alone.shape == (12, 3, 32, 32)
    assert float((alone - mixed[:12]).abs().max()) < 1e-3


def test_homographies_for_many_images_follow_the_per_image_stream():
    """One draw for a whole job gives what one call per image would: batching does not change a copy."""
    from plugin.core.transforms import homographies_per_image, random_homographies

    sizes = [(28, 28), (375, 500), (240, 320)]
    for recipe in (Recipe(), Recipe(perspective=0)):
        one, many = np.random.default_rng(9), np.random.default_rng(9)
        ref = np.concatenate([random_homographies(3, h, w, recipe, one) for h, w in sizes])
        assert np.array_equal(homographies_per_image(sizes, 3, recipe, many), ref)
        assert one.random() == many.random()  # the stream is left where the per-image calls leave it


def test_expand_leaf_still_returns_raw_copies():
    img = np.full((20, 30, 3), 100, np.uint8)
    out = expand_leaf([img, img], Recipe(transforms_per_image=3), seed=0)
    assert len(out) == 8 and all(o.shape == (20, 30, 3) and o.dtype == np.uint8 for o in out)


def test_wilson_bounds_bracket_the_rate():
    p, n = np.array([0.0, 0.3, 1.0]), np.array([5, 20, 5])
    lo, up = wilson_lower_bound(p, n, 2.0), wilson_upper_bound(p, n, 2.0)
    assert np.all(lo <= p) and np.all(p <= up)
    assert up[0] < 0.5 and lo[2] > 0.5


class Oracle(CountingBlackBox):
    """Exact: an image's leaf is its grey level; class = ``mapping[leaf]`` (raw path only)."""

    def __init__(self, mapping: dict[int, int], num_classes: int):
        super().__init__(num_classes=num_classes)
        self.mapping = mapping

    def _predict(self, images):
        return np.array([self.mapping.get(int(np.median(im[..., 0])) // 10, 0) for im in images])


def _grey_corpus(n_leaves: int, n_images: int) -> Corpus:
    bench = _bench()
    synsets = bench.imagenet_synsets(n_leaves)
    h = Hierarchy.from_wordnet(synsets)
    return Corpus("grey", [Leaf(s, h.name(s), [np.full((16, 16, 3), 10 * k + 5, np.uint8)] * n_images)
                           for k, s in enumerate(synsets)], h)


def test_adaptive_pass_spends_less_and_records_its_spend():
    corpus = _grey_corpus(20, 30)
    mapping = {k: k % 4 for k in range(20)}
    recipe = Recipe(images_per_leaf=30, min_samples=5)
    ada = search(Oracle(mapping, 4), corpus, recipe).findings
    ex = search(Oracle(mapping, 4), corpus, recipe.replace(score_pass="exhaustive")).findings
    assert ex.queries == ex.exhaustive_queries == 20 * 30 * 4
    # Each class takes five leaves in five domains alike: a tie more images cannot break, and the pass
    # measures the tied leaves until all their images are in (2,096 of 2,400): then it answers as the
    # exhaustive pass does, which a tie decided on 4 images of each leaf need not.
    assert ada.exhaustive_queries == ex.queries and ada.queries < ex.queries
    assert len(ada.leaf_spend) == 20 and sum(s.queries for s in ada.leaf_spend) == ada.queries
    assert all(s.images >= recipe.adaptive_first_images and s.queries == 4 * s.images + s.filtered
               for s in ada.leaf_spend)
    d = ada.to_dict()
    assert d["exhaustive_queries"] == ex.queries and len(d["leaf_spend"]) == 20
    assert [sorted(n.synset for n in c.leaves) for c in ada.classes] == [sorted(n.synset for n in c.leaves) for c in ex.classes]


def test_copy_agreement_measures_how_alike_copies_are():
    """Kish's design effect: independent copies count as copies, identical ones as one image."""
    from plugin.core.scores import _CopyAgreement

    rng = np.random.default_rng(0)
    counts = np.zeros((3, 2), np.int64)
    indep, same = _CopyAgreement(2, 4), _CopyAgreement(2, 4)
    for j in range(2):
        lab = rng.integers(0, 3, (200, 4))
        indep.add(j, lab)
        same.add(j, np.repeat(lab[:, :1], 4, axis=1))
        counts[:, j] = np.bincount(lab.ravel(), minlength=3)
    assert abs(indep.kappa(counts)) < 0.05
    assert same.kappa(counts) > 0.95
    assert np.allclose(same.effective(np.array([10, 10]), 1.0), 10)  # one image's worth per image
    assert np.allclose(indep.effective(np.array([10, 10]), 0.0), 40)  # every copy counts
    pure = _CopyAgreement(1, 4)
    pure.add(0, np.zeros((5, 4), np.int64))
    assert pure.kappa(np.array([[20], [0]])) == 1.0  # no evidence either way: the worst case


def test_adaptive_pass_respects_the_model_budget():
    corpus = _grey_corpus(10, 30)
    bb = Oracle({k: k % 3 for k in range(10)}, 3)
    sp = functional_scores(bb, corpus, Recipe(images_per_leaf=30, query_budget=150))
    assert sp.queries <= 150 and bb.num_queries == sp.queries and sp.n_images.min() >= 1
    kept = functional_scores(Oracle({k: k % 3 for k in range(10)}, 3), corpus,
                             Recipe(images_per_leaf=30, query_budget=150), reserve=60)
    assert kept.queries <= 90  # the follow-up checks' share is left unspent


def test_leaf_budget_caps_images_per_leaf():
    corpus = _grey_corpus(3, 30)
    sp = functional_scores(Oracle({}, 2), corpus, Recipe(images_per_leaf=30, leaf_query_budget=40,
                                                         score_pass="exhaustive"))
    assert list(sp.n_images) == [10, 10, 10] and sp.queries == 120


def test_generality_scales_with_what_a_leaf_can_supply():
    corpus = _grey_corpus(3, 20)
    sp = functional_scores(Oracle({}, 2), corpus, Recipe(images_per_leaf=20, score_pass="exhaustive"))
    assert effective_min_samples(sp, Recipe(images_per_leaf=20)) == 15
    sp50 = functional_scores(Oracle({}, 2), _grey_corpus(3, 50), Recipe(images_per_leaf=50, score_pass="exhaustive"))
    assert effective_min_samples(sp50, Recipe()) == Recipe().min_samples  # the demo's rule unchanged


@pytest.mark.parametrize("bad", [{"score_pass": "lazy"}, {"adaptive_growth": 1.0}, {"leaf_query_budget": 2},
                                 {"min_samples_fraction": 0}, {"seed": -1}])
def test_adaptive_knobs_are_validated(bad):
    with pytest.raises(ConfigError):
        Recipe(**bad)


def test_both_paths_of_the_protocol():
    bench = _bench()
    corpus = bench.synthetic_corpus(12, 6)
    box = bench.TreeBlackBox(corpus, list(range(12)), accuracy=1.0, input_size=32)
    assert isinstance(box, TensorBlackBox)
    raw = [corpus.leaves[k].images[0] for k in range(12)]
    assert list(box.predict(raw)) == list(range(12))  # raw RGB path
    x = expand_to_input([(raw, 0, 0)], Recipe(transforms_per_image=0), box.input_spec)
    assert list(box.predict_tensor(x)) == list(range(12)) and box.num_queries == 24  # tensor path, counted


def test_lazy_imagenet_leaves_hold_no_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAIN_FINDER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "val"
    rng = np.random.default_rng(0)
    for s in ("n02690373", "n04552348"):
        (root / s).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(root / s / f"{k}.JPEG")
    eager = load_imagenet_folder(root, progress=False, lazy=False)
    lazy = load_imagenet_folder(root, progress=False)
    assert isinstance(lazy.leaves[0].images, CachedImages)
    assert all(np.array_equal(a, b) for la, lb in zip(eager.leaves, lazy.leaves) for a, b in zip(la.images, lb.images))
    nocache = load_imagenet_folder(root, progress=False, cache=False)
    assert isinstance(nocache.leaves[1].images, FileImages) and nocache.leaves[1].images[2].shape == (240, 320, 3)
    sized = load_imagenet_folder(root, progress=False, short_side=64)
    assert sized.leaves[0].images[0].shape == (64, 85, 3)  # stored at a model's pre-crop size


@pytest.mark.slow
def test_imagenet_shaped_smoke_100_leaves():
    """The 100-leaf version of benchmarks/imagenet_scale.py with a 90%-accurate 100-class model."""
    bench = _bench()
    corpus = bench.synthetic_corpus(100, 50)
    recipe = Recipe()  # 50 images per leaf, adaptive
    ada = search(bench.TreeBlackBox(corpus, list(range(100)), 0.9), corpus, recipe, "tree").findings
    ex = search(bench.TreeBlackBox(corpus, list(range(100)), 0.9), corpus,
                recipe.replace(score_pass="exhaustive"), "tree").findings
    assert ex.queries == ada.exhaustive_queries == 100 * 50 * 4
    assert ada.queries * 3 <= ex.queries, (ada.queries, ex.queries)
    assert bench.agreement(ada, ex) >= 0.95
    # A 10-class model: about ten leaves label 90% as each class, a tie that the bootstrap sees. Its
    # near ties across domains stay open until their leaves are measured (stability is what "settled"
    # means), so it saves little (measured 1.2x; the exhaustive pass finds 6 of its 10 classes).
    ten = list(np.linspace(0, 99, 10).astype(int))
    t10 = search(bench.TreeBlackBox(corpus, ten, 0.9), corpus, recipe, "ten").findings
    assert t10.queries < t10.exhaustive_queries and t10.found_fraction >= 0.6, t10.queries
    assert all(c.stability >= recipe.stability_min for c in t10.classes if c.found)
    worst = search(bench.TreeBlackBox(corpus, list(range(100)), 0.9), corpus,
                   recipe.replace(adaptive_copy_agreement=False), "tree").findings
    assert ada.queries < worst.queries  # the box's copies are independent: counting them saves queries
    # 20 images per leaf: single-leaf classes are *found*, not only guessed (generality scales with supply)
    small = bench.synthetic_corpus(100, 20)
    f20 = search(bench.TreeBlackBox(small, list(range(100)), 0.9), small, Recipe(images_per_leaf=20), "tree").findings
    assert f20.found_fraction >= 0.9
    assert sum(bench.chosen_leaf(c) == small.synsets[c.index] for c in f20.classes) >= 90


class Fingerprint(CountingBlackBox):
    """Labels each copy by a hash of its exact pixels, on both paths: the same copy, the same label."""

    def __init__(self, num_classes: int, size: int = 16):
        super().__init__(num_classes=num_classes)
        self.input_spec = InputSpec((size, size), 1.0, "center", "bilinear", (0.5,) * 3, (0.5,) * 3)

    def _hash(self, data: bytes) -> int:
        import hashlib

        return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "little") % self.num_classes

    def _predict(self, images):
        return [self._hash(np.ascontiguousarray(im).tobytes()) for im in images]

    def _predict_tensor(self, batch):
        return [self._hash(row.contiguous().numpy().tobytes()) for row in batch]


def _noise_corpus(n_leaves: int, n_images: int) -> Corpus:
    synsets = _bench().imagenet_synsets(n_leaves)
    h = Hierarchy.from_wordnet(synsets)
    rng = np.random.default_rng(5)
    return Corpus("noise", [Leaf(s, h.name(s), [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                                                for _ in range(n_images)]) for s in synsets], h)


def test_a_copy_depends_on_its_image_alone_not_on_the_job_that_carries_it():
    """Image k of a leaf gets the same copies whether a round, a chunk or the whole leaf carries it."""
    imgs = list(_noise_corpus(1, 7).leaves[0].images)
    recipe = Recipe()
    spec = Fingerprint(4).input_spec
    whole = expand_to_input([(imgs, 11, 0)], recipe, spec)
    split = expand_to_input([(imgs[:3], 11, 0), (imgs[3:5], 11, 3), (imgs[5:], 11, 5)], recipe, spec)
    alone = expand_to_input([(imgs[4:5], 11, 4)], recipe, spec)
    assert torch.equal(whole, split) and torch.equal(whole[16:20], alone)
    assert not torch.equal(whole[16:20], expand_to_input([(imgs[4:5], 11, 0)], recipe, spec))  # k, not position
    raw_whole, raw_split = expand_leaf(imgs, recipe, seed=11), expand_leaf(imgs[2:], recipe, seed=11, start=2)
    assert all(np.array_equal(a, b) for a, b in zip(raw_whole[8:], raw_split))


@pytest.mark.parametrize("tensor", [True, False])
def test_the_adaptive_pass_sends_each_image_the_copies_the_exhaustive_pass_sends(tensor, monkeypatch):
    """Same seed, same copies, same labels: an adaptive pass is a subsample of the exhaustive one, on any chunking."""
    import plugin.core.scores as scores

    corpus = _noise_corpus(8, 24)
    recipe = Recipe(images_per_leaf=24, min_samples=5)

    def run(**kw):
        box = Fingerprint(3)
        if not tensor:
            del box.input_spec  # the raw path (expand_leaf), as a remote API takes it
        return functional_scores(box, corpus, recipe.replace(**kw))

    ex = run(score_pass="exhaustive")
    ada = run(adaptive_settle=False)
    assert 0 < ada.queries < ex.queries
    assert all(np.array_equal(a, e[: len(a)]) for a, e in zip(ada.labels, ex.labels))
    monkeypatch.setattr(scores, "CHUNK_PIXELS", 3 * 16 * 16 * 8)  # a CPU's chunks against a GPU's: 2 images each
    monkeypatch.setattr(scores, "CHUNK", 8)
    small = run(score_pass="exhaustive")
    assert all(np.array_equal(a, e) for a, e in zip(small.labels, ex.labels))
    assert not all(np.array_equal(a, e) for a, e in zip(run(score_pass="exhaustive", seed=1).labels, ex.labels))
