"""The auxiliary-corpus and label-similarity checks on the real demo models."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from plugin.models.torch_blackbox import TorchBlackBox
from crawler.cards import assess_documentation
from plugin.models.checkpoint import inspect_checkpoint
from plugin.corpora.aux import NAMED_AUX_CORPORA, get_aux_corpus
from plugin.checks import CheckContext
from plugin.checks.aux import aux_check, image_scores
from plugin.checks.labels import label_similarity_check
from plugin.demo.corpus import DIGIT_SYNSETS, FASHION_SYNSETS
from plugin.demo.models import LABELLED_MODELS, model_dir
from plugin.core.errors import UnknownNameError
from plugin.core.recipe import Recipe

SANDAL, SNEAKER, BOOT = "n04133789", "n03472535", "n02872752"  # footwear's classes 0, 1, 2
TRUE_LABELS = ("sandal", "sneaker", "ankle boot")


@pytest.fixture(scope="module")
def fashion_aux():
    return get_aux_corpus("demo-fashion", max_per_leaf=10)


@pytest.fixture(scope="module")
def footwear_search(demo_models, demo_corpus):
    from plugin.core.search import search

    bb = TorchBlackBox.from_folder(model_dir("footwear"))
    return bb, search(bb, demo_corpus, Recipe.load("demo"), model="footwear")


def test_named_aux_corpora_are_flat_demo_leaves():
    label, fashion = get_aux_corpus("demo-fashion", max_per_leaf=3)
    assert label == "demo-fashion" and fashion.hierarchy is None
    assert [l.synset for l in fashion.leaves] == FASHION_SYNSETS and all(len(l) == 3 for l in fashion.leaves)
    label, faces = get_aux_corpus("people=demo-digits-faces", max_per_leaf=3)
    assert label == "people" and faces.hierarchy is None
    assert [l.synset for l in faces.leaves] == [*DIGIT_SYNSETS, "n05600637"]
    with pytest.raises(UnknownNameError, match="demo-digits-faces.*demo-fashion"):
        get_aux_corpus("named:x=cifar")
    with pytest.raises(UnknownNameError, match="imagefolder.*named corpora.*demo-fashion"):
        get_aux_corpus("cifar:x=demo-fashion")
    assert set(NAMED_AUX_CORPORA) == {"demo-digits-faces", "demo-fashion"}


def test_aux_check_finds_the_footwear_leaves(demo_models, fashion_aux, tmp_path):
    bb = TorchBlackBox.from_folder(model_dir("footwear"))
    recipe = dataclasses.replace(Recipe.load("ci"), images_per_leaf=10)
    ctx = CheckContext(bb, None, None, recipe, None, {"loaded": [fashion_aux]}, tmp_path, "footwear")
    before = bb.num_queries
    res = aux_check(ctx)
    assert res.applicable and set(res.summary) == {"demo-fashion"}
    s = res.summary["demo-fashion"]
    # one pass: 10 leaves x 10 images x (2 transforms + the original)
    assert s["queries"] == bb.num_queries - before == 10 * 10 * 3
    assert res.metrics["aux.demo-fashion.queries"] == res.metrics["aux.queries"] == s["queries"]
    tops = {c["index"]: (c["top_leaf"], c["top_score"]) for c in s["classes"]}
    # Measured (10 images per leaf): sandal 0.90, gym shoe 0.87 on top; the
    # boot class labels most clothing (trouser 0.97, pullover 0.97, boot 0.70):
    # a 3-class model answers "boot" for anything that is not a low shoe.
    assert tops[0][0] == SANDAL and tops[0][1] > 0.8
    assert tops[1][0] == SNEAKER and tops[1][1] >= 0.8
    assert tops[2][1] > 0.8
    # Among the footwear leaves, every class picks its own.
    rows = list(csv_rows(tmp_path / "aux" / "demo-fashion" / "aux_scores.csv"))
    for i, truth in enumerate((SANDAL, SNEAKER, BOOT)):
        shoe = {r["aux_leaf"]: float(r["score"]) for r in rows if int(r["class"]) == i and r["aux_leaf"] in (SANDAL, SNEAKER, BOOT)}
        assert max(shoe, key=shoe.get) == truth, (i, shoe)
    assert s["mean_top_score"] == pytest.approx(sum(t[1] for t in tops.values()) / 3, abs=1e-3)
    assert res.metrics["aux.demo-fashion.mean_top_score"] == s["mean_top_score"]
    for i in range(3):
        png = tmp_path / "aux" / "demo-fashion" / f"class_{i:04d}.png"
        assert png.is_file() and png in res.artifacts
        assert len(s["classes"][i]["top_samples"]) == 4
        assert s["classes"][i]["top_samples"][0]["score"] == 1.0
    json.dumps(res.summary)  # goes into findings.json


def csv_rows(path):
    import csv

    with open(path, newline="") as fh:
        yield from csv.DictReader(fh)


def test_image_scores_rank_by_copy_fraction():
    import numpy as np

    labels = [np.array([[0, 1, 1], [1, 1, 1]]), np.array([[1, 0, 0]])]
    assert image_scores(labels, 1) == [(1.0, 0, 1), (pytest.approx(2 / 3), 0, 0), (pytest.approx(1 / 3), 1, 0)]


def test_label_similarity_true_vs_shuffled_names(footwear_search, demo_corpus, tmp_path):
    bb, result = footwear_search
    info = inspect_checkpoint(model_dir("footwear-labelled"))
    assert info.label_names == TRUE_LABELS

    def run(names, out, **opts):
        ctx = CheckContext(bb, demo_corpus, result, Recipe.load("demo"), dataclasses.replace(info, label_names=names),
                           opts, out, "footwear-labelled")
        return label_similarity_check(ctx)

    true = run(info.label_names, tmp_path / "true")
    assert true.applicable and (tmp_path / "true" / "labels" / "label_similarity.csv").is_file()
    assert (tmp_path / "true" / "labels" / "tsne.png") in true.artifacts
    s = true.summary
    assert [c["label"] for c in s["classes"]] == list(TRUE_LABELS)
    assert s["classes"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)  # sandal ~ sandal
    assert not s["contradicts_domains"]
    json.dumps(s)
    # Both derangements of three names; measured means 0.71 (true) vs 0.35 and 0.31.
    for k, shuffled in enumerate([TRUE_LABELS[1:] + TRUE_LABELS[:1], TRUE_LABELS[2:] + TRUE_LABELS[:2]]):
        wrong = run(shuffled, tmp_path / f"shuffled{k}", tsne=False)
        assert true.metrics["labels.mean_similarity"] > wrong.metrics["labels.mean_similarity"] + 0.2
        assert wrong.metrics["labels.contradictions"] > true.metrics["labels.contradictions"]
        assert wrong.summary["contradicts_domains"]


def test_checks_not_applicable(footwear_search, demo_corpus, tmp_path):
    bb, result = footwear_search
    recipe = Recipe.load("ci")
    res = aux_check(CheckContext(bb, None, result, recipe, None, {}, tmp_path))
    assert not res.applicable and "no auxiliary corpora" in res.reason and res.summary["applicable"] is False
    info = inspect_checkpoint(model_dir("footwear"))
    assert info.label_names is None
    for inf in (info, None):
        res = label_similarity_check(CheckContext(bb, demo_corpus, result, recipe, inf, {}, tmp_path))
        assert not res.applicable and res.reason == "model carries no label names" and not res.metrics
    res = label_similarity_check(CheckContext(bb, demo_corpus, result, recipe,
                                              dataclasses.replace(info, label_names=("a", "b")), {}, tmp_path))
    assert not res.applicable and "2 label names" in res.reason
    assert not (tmp_path / "labels").exists() and not (tmp_path / "aux").exists()


def test_labelled_demo_model_is_still_undocumented(demo_models):
    root, truth = demo_models
    src, names = LABELLED_MODELS["footwear-labelled"]
    folder = model_dir("footwear-labelled", root)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == (model_dir(src, root) / "model.safetensors").read_bytes()
    entry = truth["labelled_models"]["footwear-labelled"]
    assert entry["source_model"] == "footwear" and entry["label_names"] == list(names)
    assert entry["classes"] == truth["models"]["footwear"]["classes"]
    doc = assess_documentation(None, json.loads((folder / "config.json").read_text()))
    assert doc.undocumented and doc.score == pytest.approx(0.8)  # label names alone take off only 0.2
    assert not math.isnan(doc.score)


def test_recipe_aux_corpora_reach_the_check_once_through_a_plan(footwear_search, demo_corpus, tmp_path):
    """The demo recipe names two aux corpora; the plan loads them, and the check scores each once."""
    from plugin.investigate import plan_investigation, run_followups

    bb, result = footwear_search
    recipe = Recipe.load("demo").replace(check_options={"aux": {"corpora": ["demo-digits-faces", "demo-fashion"],
                                                                "max_per_leaf": 2}})
    plan = plan_investigation(demo_corpus, recipe)
    done = run_followups(["aux"], bb, demo_corpus, result, recipe, bb.info, "footwear", tmp_path, plan.check_options)
    assert done[0].applicable, done[0].reason
    assert set(done[0].summary) == {"demo-digits-faces", "demo-fashion"}
