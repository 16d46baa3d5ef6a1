"""Model-level flags: what a careful investigator must be told (paper §6.2).

Pure functions over the per-class findings and the score pass; no I/O. Each
flag is a :class:`~plugin.core.findings.Flag` in ``findings.json``'s top-level
``flags`` list:

- ``decoy-suspected``: at least ``decoy_min_classes`` classes each answer
  strongly for two far-apart domains, the chosen one and a runner-up, and both
  sides pair leaves with classes one-to-one. That is the signature of planted
  back doors (the paper's MNIST model with a CIFAR class planted per digit).
  The evidence is the pairing; hard labels alone cannot say which side is
  planted, so both are reported.
- ``mixed-domains``: the found classes split into groups whose leaves lie at
  least ``mixed_domain_distance`` hops apart (a CIFAR-10 model: vehicles and
  animals), each a region where at least two of its classes discriminate
  (a region sent wholesale to one class is a sink, not a domain).
- ``sink-class``: one class takes at least ``sink_min_leaves`` leaves far from
  its own domain. A small model labels everything, so a sink is ill-posedness,
  not a decoy: many leaves map onto *one* class, where a decoy maps one leaf
  onto each class.
- ``label-contradiction``: label names that contradict the found domains,
  from the ``label_similarity`` check (:func:`label_contradiction_flag`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from plugin.core.clusters import leaf_regions, region_takers
from plugin.core.findings import ClassFinding, Findings, Flag, Node
from plugin.core.recipe import Recipe
from plugin.core.scores import ScorePass, wilson_lower_bound

DECOY = "decoy-suspected"
MIXED = "mixed-domains"
SINK = "sink-class"
LABELS = "label-contradiction"
KINDS = (DECOY, MIXED, LABELS, SINK)


def model_flags(classes: Sequence[ClassFinding], sp: ScorePass, hierarchy, recipe: Recipe) -> tuple[Flag, ...]:
    """Every flag the search alone can raise (all but ``label-contradiction``)."""
    return (*decoy_flags(classes, sp, hierarchy, recipe),
            *mixed_domain_flags(classes, sp, hierarchy, recipe),
            *sink_flags(classes, sp, hierarchy, recipe))


def _node(hier, synset: str) -> dict:
    return Node(synset, hier.name(synset)).to_dict()


def _best_leaf(i: int, synsets: Sequence[str], adjusted: np.ndarray, col: dict[str, int]) -> str:
    """The leaf of a cluster that answers most for class ``i`` (support-adjusted)."""
    return max(synsets, key=lambda s: (adjusted[i, col[s]], s))


def _components(adjacent: np.ndarray) -> list[list[int]]:
    """Connected components of a boolean adjacency matrix, each sorted, in order of first member."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n, label = connected_components(csr_matrix(adjacent), directed=False)  # sparse: 4x faster than dense at 1,000
    return sorted(([k for k in range(len(label)) if label[k] == g] for g in range(n)), key=lambda g: g[0])


def _adjusted(sp: ScorePass, recipe: Recipe) -> np.ndarray:
    return sp.ranked(recipe.confidence_z)[0]  # the support-adjusted scores the search itself ranked by


def _measured(i: int, nodes, sp: ScorePass, col: dict[str, int], recipe: Recipe) -> float:
    """Class ``i``'s score on ``nodes`` as the images sent measure it: the Wilson bound counting them.

    A cluster's functional score is adjusted for what its leaves can supply,
    and an adaptive pass may have sent a runner-up 4 of its 50 images: 3 of 4
    sandals as "one" is no evidence of a planted sandal class. An accusation
    rests on the images that came back, as "found" does.
    """
    idx = [col[n.synset] for n in nodes]
    sent = float(np.asarray(sp.totals)[idx].sum())
    rate = float(np.asarray(sp.counts)[i, idx].sum()) / max(sent, 1.0)
    return float(wilson_lower_bound(rate, float(np.asarray(sp.n_images)[idx].sum()), recipe.confidence_z))


def decoy_flags(classes: Sequence[ClassFinding], sp: ScorePass, hier, recipe: Recipe) -> list[Flag]:
    """``decoy-suspected``: classes paired one-to-one with leaves of a second, far domain.

    A class qualifies when it is found, has a runner-up, and both scores,
    counting the images sent (:func:`_measured`), reach ``decoy_min_score``.
    Each qualifying class is a pair of best leaves (chosen side, runner-up
    side). Two classes belong to one decoy group when
    their pairs line up, side to side or crosswise (coherence may have put
    some classes on the planted side and others on the true one), with the
    leaves of a side closer than ``mixed_domain_distance``. A group of at
    least ``decoy_min_classes`` is flagged when, on both sides, distinct
    classes have distinct best leaves, and the leaves of the side's domain go
    to distinct classes (:func:`_domain_one_to_one`), each for at least
    ``decoy_min_one_to_one`` of them: a sink sends many leaves to one class
    and fails this, and so does a model that merely labels a foreign domain.
    """
    adjusted = _adjusted(sp, recipe)
    col = {s: k for k, s in enumerate(sp.leaves)}
    pairs = []  # (class, chosen best leaf, runner-up best leaf, finding)
    for c in classes:
        r = c.runner_up
        if not (c.found and r and min(_measured(c.index, c.leaves, sp, col, recipe),
                                      _measured(c.index, r.leaves, sp, col, recipe)) >= recipe.decoy_min_score):
            continue
        pairs.append((c.index, _best_leaf(c.index, [n.synset for n in c.leaves], adjusted, col),
                      _best_leaf(c.index, [n.synset for n in r.leaves], adjusted, col), c))
    if len(pairs) < recipe.decoy_min_classes:
        return []

    nodes = sorted({p[1] for p in pairs} | {p[2] for p in pairs})
    at = {s: k for k, s in enumerate(nodes)}
    close = np.asarray(hier.distance_matrix(nodes), dtype=float) < recipe.mixed_domain_distance  # inf: far

    def near(a: str, b: str) -> bool:
        return bool(close[at[a], at[b]])

    # Pairs line up side to side or crosswise (vectorised: a 1,000-class model may have hundreds of pairs).
    x = np.array([at[p[1]] for p in pairs])
    y = np.array([at[p[2]] for p in pairs])
    linked = (close[np.ix_(x, x)] & close[np.ix_(y, y)]) | (close[np.ix_(x, y)] & close[np.ix_(y, x)])
    flags = []
    for group in _components(linked):
        if len(group) < recipe.decoy_min_classes:
            continue
        anchor = pairs[group[0]][1]  # side "a": the first class's chosen side
        rows = []
        for g in group:
            i, x, y, c = pairs[g]
            a, b = (x, y) if near(x, anchor) else (y, x)
            rows.append((i, a, b, c))
        one_to_one = min(len({a for _, a, _, _ in rows}), len({b for _, _, b, _ in rows})) / len(rows)
        side_a = hier.lca([a for _, a, _, _ in rows])
        side_b = hier.lca([b for _, _, b, _ in rows])
        spread = [_domain_one_to_one(side, sp, adjusted, hier, recipe) for side in (side_a, side_b)]
        if min(one_to_one, *spread) < recipe.decoy_min_one_to_one:
            continue
        evidence = {
            "domains": [_node(hier, side_a) if side_a else None, _node(hier, side_b) if side_b else None],
            "one_to_one": round(one_to_one, 4),
            "domain_one_to_one": [round(x, 4) for x in spread],
            "pairs": [{"class": i, "leaves": [_node(hier, a), _node(hier, b)],
                       "chosen": [n.to_dict() for n in c.leaves], "runner_up": [n.to_dict() for n in c.runner_up.leaves],
                       "functional_scores": [round(c.functional_score, 4), round(c.runner_up.functional_score, 4)]}
                      for i, a, b, c in sorted(rows)],
            "note": "hard labels cannot tell which side is planted; both answer one-to-one",
        }
        flags.append(Flag(DECOY, tuple(sorted(i for i, _, _, _ in rows)), evidence))
    return flags


def _domain_one_to_one(side: str | None, sp: ScorePass, adjusted: np.ndarray, hier, recipe: Recipe) -> float:
    """Distinct classes taking the leaves under ``side``, over those leaves.

    A leaf counts when it can supply ``min_samples`` images (one photo is no
    evidence) and the class taking the plurality of its copies reaches
    ``threshold`` on the support-adjusted score (a planted leaf always does).
    1.0 is a permutation, as planted decoys are; a model that merely labels a
    foreign domain somewhere (``fashion10`` sends the digits to six of its
    classes) scores lower.
    """
    if side is None:
        return 0.0
    size = sp.support
    taker = sp.counts.argmax(axis=0)
    cols = [j for j, s in enumerate(sp.leaves) if size[j] >= recipe.min_samples
            and adjusted[taker[j], j] >= recipe.threshold and hier.is_ancestor(side, s)]
    return len(set(taker[cols].tolist())) / len(cols) if cols else 0.0


def mixed_domain_flags(classes: Sequence[ClassFinding], sp: ScorePass, hier, recipe: Recipe) -> list[Flag]:
    """``mixed-domains``: found classes whose chosen leaves fall into far-apart domains.

    Classes are linked when some chosen leaf of one lies closer than
    ``mixed_domain_distance`` hops to a chosen leaf of the other; the linked
    groups that are *domains* are counted, and two or more are flagged, each
    with its classes and its LCA. Two kinds of evidence are no second domain
    (a leaf's taker: the class taking most of its copies, ``ScorePass.takers``):

    - a class whose runner-up reaches ``decoy_min_score`` in a region where two
      classes discriminate: it could as well sit there, so it does not split
      the model (a 10-class fashion model's shirt class on the digits, whose
      garment alternative answers too);
    - a group whose region (its chosen leaves and their regions,
      :func:`plugin.core.clusters.leaf_regions`) goes to one
      class only: a model discriminates inside its domain, while a sink is a
      region it sends wholesale to one class (every digit "ankle boot"; the
      face leaf "bag"). ``sink-class`` is the flag for that.
    """
    cache: dict = {}

    def takers(synsets) -> set[int]:
        return _region_takers(synsets, sp, hier, recipe, cache)

    # A class that answers as strongly in a region where the model discriminates could sit there.
    found = [c for c in classes if c.found and c.leaves and (
        c.runner_up is None or c.runner_up.functional_score < recipe.decoy_min_score
        or len(takers([n.synset for n in c.runner_up.leaves])) < 2)]
    if len(found) < 2:
        return []
    chosen = sorted({n.synset for c in found for n in c.leaves})
    col = {s: k for k, s in enumerate(chosen)}
    dist = np.asarray(hier.distance_matrix(chosen), dtype=float)
    dist = np.where(np.isfinite(dist), dist, 100.0)  # disconnected custom roots: far apart
    flat = np.array([col[n.synset] for c in found for n in c.leaves], dtype=int)
    starts = np.cumsum([0] + [len(c.leaves) for c in found])[:-1]
    # Class-to-class distance = nearest pair of chosen leaves (vectorised: 1,000 classes are 1M pairs).
    between = np.minimum.reduceat(np.minimum.reduceat(dist[flat][:, flat], starts, axis=0), starts, axis=1)
    groups = _components(between < recipe.mixed_domain_distance)
    groups = [g for g in groups if len(takers([n.synset for k in g for n in found[k].leaves])
                                       & {found[k].index for k in g}) >= 2]
    if len(groups) < 2:
        return []
    out = []
    for g in groups:
        lca = hier.lca([n.synset for k in g for n in found[k].leaves])
        out.append({"classes": [found[k].index for k in g], "domain": _node(hier, lca) if lca else None})
    gaps = [float(between[np.ix_(a, b)].min()) for n, a in enumerate(groups) for b in groups[n + 1:]]
    evidence = {"groups": out, "min_distance": min(gaps)}
    return [Flag(MIXED, tuple(sorted(found[k].index for g in groups for k in g)), evidence)]


def _region_takers(synsets: Sequence[str], sp: ScorePass, hier, recipe: Recipe, cache: dict) -> set[int]:
    """Distinct classes taking the leaves of a region: ``synsets`` and their regions (:func:`leaf_regions`)."""
    at = {s: k for k, s in enumerate(sp.leaves)}
    own = [at[s] for s in synsets]
    return region_takers(own, sp.takers, leaf_regions(sp, hier, recipe, own, cache))


def sink_flags(classes: Sequence[ClassFinding], sp: ScorePass, hier, recipe: Recipe) -> list[Flag]:
    """``sink-class``: a found class that takes many leaves far from its own domain.

    A leaf counts for class i when it can supply ``min_samples`` images, i
    takes the plurality of its copies, its support-adjusted score reaches
    ``sink_min_score``, and it lies at least ``runner_up_min_distance`` hops
    from every chosen leaf of the class.
    """
    adjusted = _adjusted(sp, recipe)
    taker = sp.counts.argmax(axis=0)
    big = sp.support >= recipe.min_samples  # one photo is no evidence of a sink either
    flags = []
    for c in classes:
        if not (c.found and c.leaves):
            continue
        i = c.index
        cand = [j for j in np.flatnonzero((taker == i) & (adjusted[i] >= recipe.sink_min_score) & big)
                if sp.leaves[j] not in {n.synset for n in c.leaves}]
        if len(cand) < recipe.sink_min_leaves:
            continue
        d = np.asarray(hier.distance_matrix([sp.leaves[j] for j in cand], [n.synset for n in c.leaves]), dtype=float)
        far = [j for j, row in zip(cand, d) if row.min() >= recipe.runner_up_min_distance]
        if len(far) >= recipe.sink_min_leaves:
            leaves = [{**_node(hier, sp.leaves[j]), "score": round(float(sp.scores[i, j]), 4)}
                      for j in sorted(far, key=lambda j: -sp.scores[i, j])]
            flags.append(Flag(SINK, (i,), {"domain": c.domain.to_dict() if c.domain else None, "leaves": leaves}))
    return flags


def label_contradiction_flag(summary: dict) -> Flag | None:
    """``label-contradiction`` from the ``label_similarity`` check's summary, if any class contradicts.

    ``majority`` says whether more than half of the found classes do (the
    check's ``contradicts_domains``).
    """
    rows = [r for r in (summary or {}).get("classes", []) if r.get("contradicts")]
    if not rows:
        return None
    evidence = {"threshold": summary.get("threshold"), "majority": bool(summary.get("contradicts_domains")),
                "labels": [{"class": r["index"], "label": r["label"], "domain": r.get("domain"),
                            "similarity": r.get("similarity")} for r in rows]}
    return Flag(LABELS, tuple(sorted(int(r["index"]) for r in rows)), evidence)


def with_flags(findings: Findings, flags: Sequence[Flag]) -> Findings:
    """``findings`` with ``flags`` appended (a flag of the same kind and classes is not repeated)."""
    have = {(f.kind, f.classes) for f in findings.flags}
    new = tuple(f for f in flags if (f.kind, f.classes) not in have)
    return replace(findings, flags=findings.flags + new) if new else findings


def flag_summary(flags: Sequence[Flag]) -> str:
    """One short line for tags and tables: ``"decoy-suspected[0,1,2],sink-class[2]"``."""
    return ",".join(f"{f.kind}[{','.join(map(str, f.classes))}]" for f in flags)
