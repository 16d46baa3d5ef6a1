"""Dataset-index matching on real demo models, a permuted copy, and the real EfficientNet."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from plugin.models.torch_blackbox import TorchBlackBox
from plugin.models.checkpoint import inspect_checkpoint
from plugin.checks import CheckContext, get_check
from plugin.checks.dataset_index import known_orders
from plugin.demo.corpus import FASHION_SYNSETS
from plugin.demo.models import model_dir
from plugin.core.recipe import Recipe
from plugin.core.search import search

pytestmark = pytest.mark.slow


def run_check(folder, corpus, tmp_path, recipe=None):
    recipe = recipe or Recipe.load("demo")
    bb = TorchBlackBox.from_folder(folder)
    result = search(bb, corpus, recipe)
    before = bb.num_queries
    ctx = CheckContext(bb, corpus, result, recipe, inspect_checkpoint(folder), {}, tmp_path, folder.name)
    res = get_check("dataset_index")(ctx)
    assert bb.num_queries == before  # the evidence is the search pass itself
    return res


def permuted_copy(src, dst, perm):
    """A copy of a model whose output k is the original's output perm[k]."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    sd["fc.weight"] = sd["fc.weight"][perm].contiguous()
    sd["fc.bias"] = sd["fc.bias"][perm].contiguous()
    save_file(sd, str(dst / "model.safetensors"))
    return dst


def test_fashion10_is_index_aligned(demo_models, demo_corpus, tmp_path):
    res = run_check(model_dir("fashion10"), demo_corpus, tmp_path)
    assert res.summary["verdict"] == "Fashion-MNIST classifier, index-aligned"
    fm = next(o for o in res.summary["orders"] if o["dataset"] == "Fashion-MNIST")
    assert fm["identity"] and fm["accuracy_as_dataset"] > 0.8
    assert (tmp_path / "dataset_index" / "dataset_index.txt").is_file()


def test_permuted_copy_gets_the_right_mapping(demo_models, demo_corpus, tmp_path):
    perm = np.random.default_rng(3).permutation(10)
    folder = permuted_copy(model_dir("fashion10"), tmp_path / "fashion10-permuted", perm)
    res = run_check(folder, demo_corpus, tmp_path)
    assert "permuted" in res.summary["verdict"] and res.summary["dataset"] == "Fashion-MNIST"
    fm = next(o for o in res.summary["orders"] if o["dataset"] == "Fashion-MNIST")
    mapping = {p["model_class"]: p["dataset_index"] for p in fm["mapping"]}
    assert mapping == {k: int(perm[k]) for k in range(10)}
    assert fm["accuracy_as_dataset"] < 0.3  # read in the standard order it is mostly wrong


def test_footwear_is_a_fashion_subset(demo_models, demo_corpus, tmp_path):
    res = run_check(model_dir("footwear"), demo_corpus, tmp_path)
    fm = next(o for o in res.summary["orders"] if o["dataset"] == "Fashion-MNIST")
    assert {p["model_class"]: p["dataset_synset"] for p in fm["mapping"]} == {
        0: FASHION_SYNSETS[5], 1: FASHION_SYNSETS[7], 2: FASHION_SYNSETS[9]}
    assert res.summary["verdict"].startswith("Fashion-MNIST classes, permuted")


def test_upper_body_maps_each_class_to_its_leaf(demo_models, demo_corpus, tmp_path):
    res = run_check(model_dir("upper-body"), demo_corpus, tmp_path)
    fm = next(o for o in res.summary["orders"] if o["dataset"] == "Fashion-MNIST")
    assert {p["model_class"]: p["dataset_index"] for p in fm["mapping"]} == {0: 0, 1: 2, 2: 4, 3: 6}


def test_digits_and_not_fashion(demo_models, demo_corpus, tmp_path):
    res = run_check(model_dir("digits"), demo_corpus, tmp_path)
    assert res.summary["verdict"] == "digits classifier, index-aligned"


def test_imagenet_orders_from_timm(demo_corpus):
    names = {o.dataset: o for o in known_orders(demo_corpus, 1000)}
    assert names["ImageNet-1k"].offset == 0 and len(names["ImageNet-1k"].synsets) == 1000
    with_background = {o.dataset: o for o in known_orders(demo_corpus, 1001)}
    assert with_background["ImageNet-1k"].offset == 1
    assert "ImageNet-1k" not in {o.dataset for o in known_orders(demo_corpus, 10)}


def test_efficientnet_reads_as_imagenet(demo_models, demo_corpus, tmp_path):
    recipe = Recipe.load("demo").replace(images_per_leaf=4, transforms_per_image=1)
    res = run_check(model_dir("tf_efficientnet_lite0"), demo_corpus, tmp_path, recipe)
    inet = next(o for o in res.summary["orders"] if o["dataset"] == "ImageNet-1k")
    assert 967 in inet["aligned_classes"]  # espresso -> the coffee photo
    assert inet["identity"]
    assert res.summary["verdict"] == "ImageNet-1k classifier, index-aligned"
    json.dumps(res.summary)  # JSON-able for findings.json
