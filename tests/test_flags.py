"""Runner-ups and model-level flags (paper §6.2): decoys, mixed domains, sinks, label contradictions.

The first tests build exact score passes by hand on real WordNet leaves, so
the truth is known; the slow ones run the search on the demo models built by
``build-demo``, among them a planted-decoy model and a mixed model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from plugin.core.clusters import choose_clusters, class_clusters, finalize_class, runner_up, top_leaves
from plugin.core.corpus import Corpus, Leaf
from plugin.core.findings import Findings, Verdict
from plugin.core.flags import DECOY, LABELS, MIXED, SINK, flag_summary, label_contradiction_flag, model_flags, with_flags
from plugin.core.hierarchy import Hierarchy
from plugin.core.recipe import Recipe
from plugin.core.scores import ScorePass
from plugin.demo.corpus import DIGIT_SYNSETS, FASHION_SYNSETS

JERSEY, TROUSER, PULLOVER, DRESS, COAT, SANDAL, SHIRT, GYM_SHOE, BAG, BOOT = FASHION_SYNSETS
ZERO, ONE, TWO, THREE, FOUR, FIVE, SIX, SEVEN, EIGHT, NINE = DIGIT_SYNSETS
N = 30  # images per leaf
RECIPE = Recipe(transforms_per_image=1, include_original=True)  # two copies per image


@pytest.fixture(scope="module")
def tree():
    return Hierarchy.from_wordnet(FASHION_SYNSETS + DIGIT_SYNSETS)


def exact_pass(tree, answers: dict[str, dict[int, int]], num_classes: int) -> tuple[ScorePass, Corpus]:
    """A score pass where leaf s sends ``answers[s][i]`` of its N images to class i (both copies)."""
    leaves = FASHION_SYNSETS + DIGIT_SYNSETS
    labels, counts = [], np.zeros((num_classes, len(leaves)), np.int64)
    for j, s in enumerate(leaves):
        per = answers.get(s, {})
        row = [c for c, k in per.items() for _ in range(k)]
        row += [-1] * (N - len(row))  # the rest: no class of interest (never counted)
        labels.append(np.repeat(np.array(row, np.int64)[:, None], 2, axis=1))
        for c in row:
            if c >= 0:
                counts[c, j] += 2
    sp = ScorePass(leaves, counts, np.full(len(leaves), 2 * N), np.full(len(leaves), N), labels, 2 * N * len(leaves), 0.0)
    blank = [np.zeros((8, 8, 3), np.uint8)]  # the search below reads only the pass and the tree
    corpus = Corpus("exact", [Leaf(s, tree.name(s), blank) for s in leaves], tree)
    return sp, corpus


def run(sp, corpus, recipe=RECIPE):
    options = class_clusters(sp, corpus, recipe)
    chosen = choose_clusters(options, corpus, recipe, sp.leaves)
    found = [finalize_class(i, c, top_leaves(i, sp, corpus, recipe), sp, corpus, recipe,
                            runner_up(o, c, corpus, recipe, sp.leaves)).finding
             for i, (o, c) in enumerate(zip(options, chosen))]
    return found, model_flags(found, sp, corpus.hierarchy, recipe)


def leaves_of(c) -> set[str]:
    return {n.synset for n in c.leaves}


# Four garment classes (and a fifth that nothing answers for).
GARMENTS = [JERSEY, TROUSER, COAT, SANDAL]
PLANTED = [THREE, SEVEN, ZERO, NINE]


def test_planted_decoy_is_flagged_with_its_pairing(tree):
    answers = {g: {i: 27} for i, g in enumerate(GARMENTS)}
    answers.update({d: {i: 25} for i, d in enumerate(PLANTED)})
    found, flags = run(*exact_pass(tree, answers, 5))
    decoys = [f for f in flags if f.kind == DECOY]
    assert len(decoys) == 1 and decoys[0].classes == (0, 1, 2, 3)
    pairs = {p["class"]: {n["synset"] for n in p["leaves"]} for p in decoys[0].evidence["pairs"]}
    assert pairs == {i: {GARMENTS[i], PLANTED[i]} for i in range(4)}
    names = {d["name"] for d in decoys[0].evidence["domains"]}
    assert "digit" in names
    for i in range(4):  # each class: one side chosen, the other its runner-up, far apart and close in score
        c = found[i]
        assert {*leaves_of(c), *(n.synset for n in c.runner_up.leaves)} == {GARMENTS[i], PLANTED[i]}
        assert c.runner_up.distance >= RECIPE.runner_up_min_distance and c.ambiguous
    assert not [f for f in flags if f.kind == SINK]


def test_a_decoy_rests_on_images_sent_not_on_what_a_leaf_could_supply(tree):
    """The adaptive pass may send a runner-up leaf 6 of its 30 images: 4 of 6 is no planted class.

    Scored for what the leaf can supply (30 images), 4 of 6 passes ``decoy_min_score``; counting the
    6 images sent it does not. A planted leaf the model takes at 6 of 6 is flagged all the same.
    """
    answers = {g: {i: 27} for i, g in enumerate(GARMENTS)}
    answers.update({d: {i: 25} for i, d in enumerate(PLANTED)})
    full, corpus = exact_pass(tree, answers, 5)

    def sent_six(taken: int) -> ScorePass:
        labels = [lab.copy() for lab in full.labels]
        n = np.full(len(full.leaves), N)
        for i, d in enumerate(PLANTED):
            j = full.leaves.index(d)
            labels[j] = np.repeat(np.array([i] * taken + [-1] * (6 - taken))[:, None], 2, axis=1)
            n[j] = 6
        counts = np.zeros_like(full.counts)
        for j, lab in enumerate(labels):
            for c in lab.ravel():
                if c >= 0:
                    counts[c, j] += 1
        return ScorePass(full.leaves, counts, 2 * n, n, labels, int(2 * n.sum()), 0.0, capacity=np.full(len(n), N))

    found, flags = run(sent_six(4), corpus)
    assert all(c.runner_up and c.runner_up.functional_score >= RECIPE.decoy_min_score for c in found[:4])
    assert DECOY not in {f.kind for f in flags}
    _, flags = run(sent_six(6), corpus)
    assert [f.classes for f in flags if f.kind == DECOY] == [(0, 1, 2, 3)]


def test_a_sink_is_not_a_decoy(tree):
    """One class taking every digit (footwear's ankle boot) is a sink, not a planted pairing."""
    answers = {SANDAL: {0: 28}, GYM_SHOE: {1: 28}, BOOT: {2: 25}}
    answers.update({d: {2: 30} for d in DIGIT_SYNSETS})
    found, flags = run(*exact_pass(tree, answers, 4))
    assert not [f for f in flags if f.kind == DECOY]
    sinks = [f for f in flags if f.kind == SINK]
    assert [f.classes for f in sinks] == [(2,)]
    assert {l["synset"] for l in sinks[0].evidence["leaves"]} == set(DIGIT_SYNSETS)
    assert leaves_of(found[2]) == {BOOT}  # coherence pulls the lone out-of-domain best back to the shoes
    assert set(DIGIT_SYNSETS) <= {n.synset for n in found[2].runner_up.leaves} and found[2].ambiguous


def test_foreign_domain_spread_over_few_classes_is_not_a_decoy(tree):
    """Three classes with a digit runner-up each, but the ten digits go to only three classes."""
    answers = {g: {i: 27} for i, g in enumerate(GARMENTS)}
    answers.update({d: {k % 3: 25} for k, d in enumerate(DIGIT_SYNSETS)})
    found, flags = run(*exact_pass(tree, answers, 5))
    assert sum(c.runner_up is not None for c in found[:3]) == 3  # the pairing alone would look one-to-one...
    assert not [f for f in flags if f.kind == DECOY]  # ... but the digit domain maps 10 leaves onto 3 classes


def test_mixed_domains_grouped(tree):
    answers = {ZERO: {0: 28}, ONE: {1: 28}, JERSEY: {2: 28}, TROUSER: {3: 28}}
    found, flags = run(*exact_pass(tree, answers, 5))
    assert [leaves_of(c) for c in found[:4]] == [{ZERO}, {ONE}, {JERSEY}, {TROUSER}]
    mixed = [f for f in flags if f.kind == MIXED]
    assert len(mixed) == 1
    groups = sorted(sorted(g["classes"]) for g in mixed[0].evidence["groups"])
    assert groups[:2] == [[0, 1], [2, 3]]
    assert mixed[0].evidence["min_distance"] >= RECIPE.mixed_domain_distance
    one_domain = run(*exact_pass(tree, {JERSEY: {0: 28}, TROUSER: {1: 28}, COAT: {2: 28}}, 4))[1]
    assert not [f for f in one_domain if f.kind == MIXED]


def test_a_sink_region_is_no_second_domain(tree):
    """A domain is where the model discriminates: a far region that one class takes wholesale is a sink.

    Three garment classes; the coat class also takes every digit. The digits go
    to one class only, so they are no second domain, whatever the coat class chose.
    """
    answers = {JERSEY: {0: 28}, TROUSER: {1: 28}, COAT: {2: 26}}
    answers.update({d: {2: 30} for d in DIGIT_SYNSETS})
    sp, corpus = exact_pass(tree, answers, 3)
    found, flags = run(sp, corpus, RECIPE.replace(coherence=0))  # the coat class on its own best: the digits
    assert set(DIGIT_SYNSETS) <= leaves_of(found[2])
    assert not [f for f in flags if f.kind == MIXED]
    # Two digit classes that split the digits make them a domain of their own.
    answers = {JERSEY: {0: 28}, TROUSER: {1: 28}, **{d: {2 + k % 2: 30} for k, d in enumerate(DIGIT_SYNSETS)}}
    found, flags = run(*exact_pass(tree, answers, 4), RECIPE.replace(coherence=0))
    assert [sorted(g["classes"]) for g in next(f for f in flags if f.kind == MIXED).evidence["groups"]] == [[0, 1], [2, 3]]


def test_a_class_that_could_sit_in_either_domain_does_not_split_them(tree):
    """A class with a strong runner-up in a region where the model discriminates is no evidence of a second domain."""
    answers = {JERSEY: {0: 28}, TROUSER: {1: 28}, COAT: {2: 28}, PULLOVER: {3: 29}, SEVEN: {3: 30}, NINE: {3: 30}}
    answers.update({d: {k % 3: 30} for k, d in enumerate(DIGIT_SYNSETS) if d not in (SEVEN, NINE)})
    found, flags = run(*exact_pass(tree, answers, 4), RECIPE.replace(coherence=0))
    assert {SEVEN, NINE} <= leaves_of(found[3]) and PULLOVER in {n.synset for n in found[3].runner_up.leaves}
    assert not [f for f in flags if f.kind == MIXED]


def test_coherence_does_not_pull_an_anchored_class_into_another_domain(tree):
    """Three digit classes and two garment classes; the trouser class also answers for 'nine'.

    Plain coherence moves it to the digits, where most classes are. Its own
    best (trouser) is strong and the jersey class sits near it, so it stays.
    """
    answers = {ZERO: {0: 28}, ONE: {1: 28}, TWO: {2: 28}, JERSEY: {3: 28}, TROUSER: {4: 29}, NINE: {4: 27}}
    sp, corpus = exact_pass(tree, answers, 6)
    found, flags = run(sp, corpus)
    assert leaves_of(found[4]) == {TROUSER} and {n.synset for n in found[4].runner_up.leaves} == {NINE}
    unguarded = run(sp, corpus, RECIPE.replace(coherence_anchor_classes=99))[0]
    assert NINE in leaves_of(unguarded[4])  # the failure the guard prevents
    # and without coherence each class is on its own best anyway
    assert leaves_of(run(sp, corpus, RECIPE.replace(coherence=0))[0][4]) == {TROUSER}


def test_label_contradiction_flag_from_the_check_summary():
    summary = {"threshold": 0.3, "contradicts_domains": False,
               "classes": [{"index": 0, "label": "sandal", "domain": "sandal", "similarity": 1.0, "contradicts": False},
                           {"index": 1, "label": "airliner", "domain": "gym shoe", "similarity": 0.1, "contradicts": True},
                           {"index": 2, "label": "x", "domain": None, "similarity": None, "contradicts": False}]}
    flag = label_contradiction_flag(summary)
    assert flag.kind == LABELS and flag.classes == (1,)
    assert flag.evidence["labels"][0]["label"] == "airliner" and flag.evidence["majority"] is False
    assert label_contradiction_flag({**summary, "classes": summary["classes"][:1]}) is None
    f = Findings("m", 3, 0, {}, (), Verdict("not-found", None))
    f2 = with_flags(with_flags(f, [flag]), [flag])  # not repeated
    assert len(f2.flags) == 1 and json.loads(f2.to_json())["flags"][0]["kind"] == LABELS
    assert flag_summary(f2.flags) == "label-contradiction[1]"


def test_flag_tags_for_mlflow():
    from plugin.core.findings import Flag
    from plugin.tracking import T_FLAG, T_FLAGS, flag_tags

    f = Findings("m", 4, 0, {}, (), Verdict("not-found", None),
                 flags=(Flag(SINK, (2,)), Flag(DECOY, (0, 1, 3)), Flag(SINK, (0,))))
    assert flag_tags(f) == {T_FLAGS: "sink-class,decoy-suspected", T_FLAG + SINK: "0,2", T_FLAG + DECOY: "0,1,3"}
    assert flag_tags(Findings("m", 1, 0, {}, (), Verdict("not-found", None))) == {T_FLAGS: ""}


def test_flag_knobs_are_recipe_params():
    r = Recipe.from_dict({"decoy_min_classes": 4, "runner_up_min_distance": 8, "singleton_candidates": False})
    assert r.decoy_min_classes == 4 and r.runner_up_min_distance == 8.0 and not r.singleton_candidates
    p = r.to_params()
    assert p["decoy_min_classes"] == "4" and p["sink_min_leaves"] == str(Recipe().sink_min_leaves)
    from plugin.core.errors import ConfigError

    with pytest.raises(ConfigError, match="decoy_min_classes"):
        Recipe(decoy_min_classes=1)


# -- the demo models -----------------------------------------------------------------------------
GROUND_TRUTH_MODELS = ["fashion10", "footwear", "upper-body", "digits"]


@pytest.fixture(scope="module")
def demo_findings(demo_models, demo_corpus):
    from plugin.core.search import search
    from plugin.demo.models import DEMO_MODELS, model_dir
    from plugin.models.torch_blackbox import TorchBlackBox

    recipe = Recipe.load("demo")
    return {name: search(TorchBlackBox.from_folder(model_dir(name)), demo_corpus, recipe, model=name).findings
            for name in DEMO_MODELS}


@pytest.mark.slow
def test_decoy_model_flagged_with_the_planted_pairing(demo_models, demo_findings):
    _, truth = demo_models
    entry = truth["models"]["fashion-decoy"]
    f = demo_findings["fashion-decoy"]
    decoys = [x for x in f.flags if x.kind == DECOY]
    assert len(decoys) == 1, flag_summary(f.flags)
    flag = decoys[0]
    assert len(flag.classes) >= Recipe.load("demo").decoy_min_classes
    for pair in flag.evidence["pairs"]:
        k = pair["class"]
        assert {n["synset"] for n in pair["leaves"]} == {entry["classes"][k], entry["planted"][k]}, pair
    # 7-9 of 10 over demo pass seeds 0-3: a class whose planted and true leaves answer alike is uncertain
    # at some seeds (the shirt class's garment side is weak), and uncertain classes never enter a flag.
    assert len(flag.classes) >= 7


@pytest.mark.slow
@pytest.mark.parametrize("name", GROUND_TRUTH_MODELS)
def test_no_decoy_on_the_ground_truth_models(demo_findings, name):
    assert not [x for x in demo_findings[name].flags if x.kind == DECOY], flag_summary(demo_findings[name].flags)


@pytest.mark.slow
def test_mixed_model_gets_both_domains_right(demo_models, demo_findings):
    from plugin.demo.models import DEMO_MODELS

    spec = DEMO_MODELS["digits-fashion"]
    f = demo_findings["digits-fashion"]
    for c, (source, _), true in zip(f.classes, spec.sources, spec.synsets):
        own = set(DIGIT_SYNSETS if source == "digits" else FASHION_SYNSETS)
        assert c.found and true in leaves_of(c) and leaves_of(c) <= own, (c.index, [n.name for n in c.leaves])
    mixed = [x for x in f.flags if x.kind == MIXED]
    assert len(mixed) == 1
    groups = [set(g["classes"]) for g in mixed[0].evidence["groups"]]
    digits = {k for k, (s, _) in enumerate(spec.sources) if s == "digits"}
    # One group of digit classes, one of garment classes. A class whose chosen cluster is itself a sink
    # (three or more leaves all taken by it: the sandal class on every shoe) is left out of the groups.
    assert len(groups) == 2 and sorted(g <= digits for g in groups) == [False, True]
    assert all(g <= digits or not g & digits for g in groups)
    assert not [x for x in f.flags if x.kind == DECOY]


@pytest.mark.slow
def test_footwear_ankle_boot_is_a_sink(demo_findings):
    f = demo_findings["footwear"]
    sinks = [x for x in f.flags if x.kind == SINK]
    assert [x.classes for x in sinks] == [(2,)]  # sandal, sneaker, ankle boot
    taken = {l["synset"] for l in sinks[0].evidence["leaves"]}
    assert len(taken & set(DIGIT_SYNSETS)) >= 8
    assert not [x for x in demo_findings["digits"].flags if x.kind == SINK]


@pytest.mark.slow
def test_flags_reach_findings_json_and_mlflow_tags(demo_models, demo_corpus, tmp_path):
    from plugin import tracking
    from plugin.demo.models import model_dir
    from plugin.investigate import investigate

    inv = investigate(model_dir("fashion-decoy"), demo_corpus, Recipe.load("demo").replace(checks=()),
                      json_out=tmp_path / "findings.json", progress=False)
    data = json.loads((tmp_path / "findings.json").read_text())
    kinds = [x["kind"] for x in data["flags"]]
    assert DECOY in kinds and all(set(x) == {"kind", "classes", "evidence"} for x in data["flags"])
    assert any(c["runner_up"] for c in data["classes"])
    tags = tracking.get_run(inv.run_id).data.tags
    assert DECOY in tags[tracking.T_FLAGS].split(",")
    assert tags[tracking.T_FLAG + DECOY] == ",".join(map(str, next(x["classes"] for x in data["flags"] if x["kind"] == DECOY)))
