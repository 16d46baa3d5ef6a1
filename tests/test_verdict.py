"""Verdicts never claim more than the evidence: coverage, vague domains, the checks, and confidence."""
from __future__ import annotations

import numpy as np
import pytest

from plugin.core.corpus import Corpus, Leaf
from plugin.core.findings import ClassFinding, Findings, LeafScore, Node, RunnerUp
from plugin.core.hierarchy import Hierarchy
from plugin.core.recipe import Recipe
from plugin.core.verdict import class_confidence, conclude, model_verdict

JERSEY, PULLOVER, COAT, SANDAL, BOOT, BAG, ROCKET = ("n03595614", "n04021028", "n03057021", "n04133789",
                                                     "n02872752", "n02773037", "n04099429")
LEAVES = [JERSEY, PULLOVER, COAT, SANDAL, BOOT, BAG, ROCKET]
VAGUE_WORDS = {"entity", "physical entity", "object", "whole", "artifact"}


@pytest.fixture(scope="module")
def corpus():
    h = Hierarchy.from_wordnet(LEAVES)
    return Corpus("wn", [Leaf(s, h.name(s), [np.zeros((4, 4, 3), np.uint8)]) for s in LEAVES], h)


def finding(corpus, i, leaves, score=0.9, found=True, top=(), runner=None):
    h = corpus.hierarchy
    dom = h.lca(leaves) if leaves else None
    return ClassFinding(i, found, tuple(Node(s, h.name(s)) for s in leaves), Node(dom, h.name(dom)) if dom else None,
                        score, 0.5, 0.7, 30 if found else 0,
                        tuple(LeafScore(s, h.name(s), a, a) for s, a in top), runner_up=runner)


def test_one_domain_when_classes_share_a_specific_node(corpus):
    v = model_verdict([finding(corpus, 0, [SANDAL]), finding(corpus, 1, [BOOT])], corpus)
    assert v.kind == "one-domain" and v.domain.name == "footwear"
    assert v.answer == "one domain: footwear (2/2 classes covered)"


def test_vague_lca_is_never_a_domain(corpus):
    classes = [finding(corpus, 0, [JERSEY]), finding(corpus, 1, [PULLOVER]), finding(corpus, 2, [COAT]),
               finding(corpus, 3, [SANDAL]), finding(corpus, 4, [BOOT]), finding(corpus, 5, [BAG])]
    v = model_verdict(classes, corpus)
    assert corpus.hierarchy.name(corpus.hierarchy.lca(LEAVES[:6])) == "artifact"  # what the old verdict said
    assert v.kind == "several-domains" and v.domain is None
    assert dict(v.domains) == {"garment": 3, "footwear": 2, "bag": 1}
    assert "garment \u00d73, footwear \u00d72, bag \u00d71" in v.answer
    assert not any(w == v.answer.split(":")[0] for w in VAGUE_WORDS)


def test_a_vague_class_domain_is_called_unclear(corpus):
    classes = [finding(corpus, 0, [SANDAL]), finding(corpus, 1, [BOOT]), finding(corpus, 2, [BAG, ROCKET])]
    v = model_verdict(classes, corpus)
    assert dict(v.domains) == {"footwear": 2, "unclear": 1} and "artifact" not in v.answer


def test_two_vague_class_domains_are_one_unclear_entry():
    """'unclear ×2', not 'unclear ×1, unclear ×1': the summary names what it can say, once."""
    astronaut, dahlia, eight, espresso = "n09818022", "n11960245", "n13745086", "n07920052"
    leaves = [astronaut, dahlia, eight, espresso]
    h = Hierarchy.from_wordnet(leaves)
    c = Corpus("wn", [Leaf(s, h.name(s), [np.zeros((4, 4, 3), np.uint8)]) for s in leaves], h)
    v = model_verdict([finding(c, 0, [astronaut, dahlia]), finding(c, 1, [eight, espresso])], c)
    assert {h.name(h.lca([astronaut, dahlia])), h.name(h.lca([eight, espresso]))} == {"organism", "abstraction"}
    assert v.domains == (("unclear", 2),) and v.answer.count("unclear") == 1


def test_too_few_found_classes_is_inconclusive(corpus):
    classes = [finding(corpus, 0, [SANDAL])] + [finding(corpus, i, [], 0.0, found=False) for i in range(1, 10)]
    v = model_verdict(classes, corpus)
    assert v.kind == "inconclusive" and v.domain is None
    assert v.answer == "inconclusive: the corpus covers 1 of 10 classes"
    strict = model_verdict(classes[:2], corpus, min_found=1, min_fraction=0.6)
    assert strict.kind == "inconclusive"
    lenient = model_verdict(classes[:2], corpus, min_found=1, min_fraction=0.5)
    assert lenient.kind == "one-domain"


def test_dataset_order_leads_the_answer(corpus):
    classes = [finding(corpus, 0, [SANDAL])] + [finding(corpus, i, [], 0.0, found=False) for i in range(1, 1000)]
    v = model_verdict(classes, corpus, dataset_order="ImageNet-1k classifier, index-aligned")
    assert v.answer == ("ImageNet-1k classifier, index-aligned; domain search inconclusive on this corpus: "
                        "1/1000 classes covered")
    assert model_verdict(classes, corpus, dataset_order="no known dataset order").dataset_order == ""


def test_confidence_is_the_margin_over_the_best_unrelated_alternative(corpus):
    h = corpus.hierarchy
    alone = finding(corpus, 0, [SANDAL], 0.9, top=[(SANDAL, 0.9), (BOOT, 0.8)])  # boot: related (same domain family)
    decoy = finding(corpus, 0, [SANDAL], 0.9, top=[(SANDAL, 0.9), (ROCKET, 0.7)])  # rocket: far away
    assert h.distance(SANDAL, BOOT) < 4 <= h.distance(SANDAL, ROCKET)
    assert class_confidence(alone, h) == pytest.approx(0.9)
    assert class_confidence(decoy, h) == pytest.approx(0.2)
    runner = RunnerUp((Node(ROCKET, "rocket"),), Node(ROCKET, "rocket"), 0.85, 0.6, 9)
    with_runner = finding(corpus, 0, [SANDAL], 0.9, runner=runner)
    assert class_confidence(with_runner, h) == pytest.approx(0.05)
    assert class_confidence(finding(corpus, 0, [], 0.0, found=False), h) == 0.0


def test_conclude_fills_class_and_model_confidence(corpus):
    classes = (finding(corpus, 0, [SANDAL], 0.9), finding(corpus, 1, [BOOT], 0.6, top=[(ROCKET, 0.5)]))
    f = Findings("m", 2, 10, {}, classes, model_verdict(list(classes), corpus))
    out = conclude(f, corpus, Recipe())
    assert [round(c.confidence, 3) for c in out.classes] == [0.9, 0.1]
    assert out.verdict.confidence == pytest.approx(0.5)
    d = out.to_dict()
    assert list(d)[:2] == ["version", "summary"] and list(d)[-1] == "recipe" and d["version"] >= 2
    assert d["summary"]["answer"] == out.verdict.answer and d["summary"]["coverage"]["classes_found"] == 2


# -- the evidence on real demo models (slow: the demo models are built once per session) --------------
FOOTWEAR_LEAVES = (SANDAL, BOOT, "n03472535")  # sandal, boot, gym shoe


@pytest.mark.slow
def test_efficientnet_is_imagenet_and_never_digit(demo_models, tmp_path):
    import json

    import mlflow

    from plugin.cli import main

    recipe = tmp_path / "small.yaml"
    recipe.write_text("images_per_leaf: 8\ntransforms_per_image: 1\nchecks: [dataset_index]\n")  # finds class 111 on digits
    out = tmp_path / "f.json"
    assert main(["investigate", "tf_efficientnet_lite0", "--recipe", str(recipe), "--json", str(out),
                 "--no-progress"]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["answer"].startswith("ImageNet-1k classifier, index-aligned; domain search inconclusive on this "
                                        "corpus:"), summary["answer"]
    assert "digit" not in summary["answer"] and summary["domain"] is None
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.tags["verdict"] == "inconclusive" and run.data.tags["domain"] == "none"
    assert run.data.tags["dataset_order"] == "ImageNet-1k classifier, index-aligned"
    assert run.data.metrics["num_classes"] == 1000 and run.data.metrics["confidence"] < 0.1


@pytest.mark.slow
def test_fashion_models_are_never_entity_or_artifact(demo_models, demo_corpus):
    from plugin.demo.models import model_dir
    from plugin.models.torch_blackbox import TorchBlackBox
    from plugin.core.search import search

    recipe = Recipe.load("demo")
    for name in ("fashion10", "upper-body"):
        f = conclude(search(TorchBlackBox.from_folder(model_dir(name)), demo_corpus, recipe, model=name).findings,
                     demo_corpus, recipe)
        v = f.verdict
        assert v.domain is None or v.domain.name not in VAGUE_WORDS, (name, v.answer)
        assert not any(w in {n for n, _ in v.domains} for w in VAGUE_WORDS), (name, v.domains)
        assert "entity" not in v.answer and "artifact" not in v.answer, (name, v.answer)


@pytest.mark.slow
def test_confidence_falls_on_a_deliberately_wrong_search(demo_models, demo_corpus):
    """footwear searched without its own leaves: whatever it picks instead must be less certain."""
    from plugin.demo.models import model_dir
    from plugin.models.torch_blackbox import TorchBlackBox
    from plugin.core.search import search

    recipe = Recipe.load("demo")
    wrong_corpus = demo_corpus.without(FOOTWEAR_LEAVES)
    right = conclude(search(TorchBlackBox.from_folder(model_dir("footwear")), demo_corpus, recipe).findings,
                     demo_corpus, recipe)
    wrong = conclude(search(TorchBlackBox.from_folder(model_dir("footwear")), wrong_corpus, recipe).findings,
                     wrong_corpus, recipe)
    assert right.verdict.kind == "one-domain" and right.verdict.domain.name == "footwear"
    assert wrong.verdict.confidence < right.verdict.confidence, (wrong.verdict, right.verdict)
    assert sum(c.confidence for c in wrong.classes) < sum(c.confidence for c in right.classes)
