"""Step 5: the model-level verdict, per-class confidence, and reconciliation with the checks.

A verdict never claims more than the evidence (README "What the verdict
says"):

- below ``verdict_min_found`` found classes, or a found fraction below
  ``verdict_min_fraction``, it is ``inconclusive``: the corpus covers K of N
  classes;
- a root-level or vague node (``verdict_vague``: entity, object, whole,
  artifact...) is never a domain; the verdict then summarises the per-class
  domains ("clothing x7, footwear x3");
- a dataset order that the ``dataset_index`` check identified leads the
  answer ("ImageNet-1k classifier, index-aligned; domain search inconclusive
  on this corpus: 1/1000 classes covered").

Confidence of a class is the Wilson-bounded functional score of its chosen
cluster minus that of the best *unrelated* alternative (the runner-up cluster,
else the best top leaf at least ``merge_distance`` hops from every chosen
leaf); 0 for a class not found. The model's confidence is the mean over all
classes, so an answer built from few classes is weak by construction.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterable

from plugin.core.corpus import Corpus
from plugin.core.findings import ClassFinding, Findings, Node, Verdict

from plugin.core.recipe import VAGUE_DOMAINS as DEFAULT_VAGUE

NO_DATASET_ORDER = "no known dataset order"
UNCLEAR = "unclear"  # how the summary names a class whose own domain is vague


def is_vague(node: str, hier, vague: set[str] | tuple[str, ...], min_depth: int) -> bool:
    """True for a root-level or generic node that must never be called a domain."""
    return hier.depth(node) < min_depth or hier.name(node) in vague


def class_confidence(c: ClassFinding, hier, merge_distance: float = 4.0) -> float:
    """Chosen cluster's Wilson-bounded score minus the best unrelated alternative's, in [0, 1]."""
    if not c.found or not c.leaves:
        return 0.0
    if c.runner_up is not None:
        rival = c.runner_up.functional_score
    else:
        chosen = [n.synset for n in c.leaves]
        rival = 0.0
        for t in c.top_leaves:
            if t.synset in chosen or (c.domain is not None and hier.is_ancestor(c.domain.synset, t.synset)):
                continue
            if min(hier.distance(t.synset, s) for s in chosen) >= merge_distance:
                rival = max(rival, t.adjusted)
    return float(min(1.0, max(0.0, c.functional_score - rival)))


def domain_groups(domains: list[str], hier, max_span: float, min_depth: int,
                  vague: Iterable[str]) -> list[tuple[str, int]]:
    """Greedy cover of class domains by specific nodes: ``[(node, classes), ...]``, largest first.

    Each round takes the non-vague node, deep enough and within ``max_span``
    hops of the domains it covers, that covers the most remaining classes
    (ties to the deeper node), and names the group by the LCA of what it
    covers. A domain no valid node covers stands alone under its own name.
    """
    vague = set(vague)
    remaining = Counter(domains)
    cover: dict[str, set[str]] = {}  # valid node -> the domains it may name
    for d in remaining:
        for x in hier.ancestors(d):
            if not is_vague(x, hier, vague, min_depth) and hier.distance(x, d) <= max_span:
                cover.setdefault(x, set()).add(d)
    groups: list[tuple[str, int]] = []
    while remaining:
        best, best_key = None, None
        for x, ds in cover.items():
            covered = [d for d in ds if d in remaining]
            key = (sum(remaining[d] for d in covered), hier.depth(x), x)
            if covered and (best_key is None or key > best_key):
                best, best_key = (x, covered), key
        if best is None:  # only vague domains left: each one by its own name
            groups += [(d, n) for d, n in remaining.most_common()]
            break
        x, covered = best
        groups.append((hier.lca(covered) or x, sum(remaining[d] for d in covered)))
        for d in covered:
            del remaining[d]
    return sorted(groups, key=lambda g: (-g[1], hier.name(g[0])))


def model_verdict(classes: list[ClassFinding], corpus: Corpus, max_span: float = 6.0, min_depth: int = 4, *,
                  min_found: int = 2, min_fraction: float = 0.5, vague: Iterable[str] = DEFAULT_VAGUE,
                  merge_distance: float = 4.0, dataset_order: str | None = None) -> Verdict:
    """The model-level answer; see the module docstring for the rules."""
    hier = corpus.hierarchy
    vague = set(vague)
    n = len(classes)
    found = [c for c in classes if c.found and c.domain]
    k = len(found)
    confidence = sum(class_confidence(c, hier, merge_distance) for c in classes) / max(1, n)
    groups = domain_groups([c.domain.synset for c in found], hier, max_span, min_depth, vague) if found else []
    # A vague class domain ("artifact" over a bag and a rocket) names nothing; say so.
    named: dict[str, int] = {}
    for g, m in groups:  # two vague groups are one "unclear", not "unclear ×1, unclear ×1"
        name = UNCLEAR if is_vague(g, hier, vague, min_depth) else hier.name(g)
        named[name] = named.get(name, 0) + m
    summary = tuple(sorted(named.items(), key=lambda x: -x[1]))  # stable: ties keep the groups' order
    order = dataset_order if dataset_order and dataset_order != NO_DATASET_ORDER else ""
    base = dict(confidence=confidence, classes_found=k, num_classes=n, domains=summary, dataset_order=order)
    coverage = f"{k}/{n} classes covered"
    if k == 0:
        kind, domain, text = "not-found", None, f"inconclusive on this corpus: no class found ({coverage})"
    elif k < min_found or k / max(1, n) < min_fraction:
        kind, domain, text = "inconclusive", None, f"inconclusive on this corpus: {coverage}"
    elif len(groups) == 1 and not is_vague(groups[0][0], hier, vague, min_depth):
        kind, domain = "one-domain", Node(groups[0][0], hier.name(groups[0][0]))
        text = f"one domain: {domain.name} ({coverage})"
    else:
        kind, domain = "several-domains", None
        text = f"several domains: {format_domains(summary)} ({coverage})"
    if order:
        answer = f"{order}; domain search {text}"
    else:
        answer = text if kind not in ("inconclusive", "not-found") else \
            f"inconclusive: the corpus covers {k} of {n} classes"
    return Verdict(kind, domain, answer=answer, **base)


def format_domains(summary: Iterable[tuple[str, int]], limit: int = 6) -> str:
    """``clothing x7, footwear x3`` (and how many more)."""
    summary = list(summary)
    text = ", ".join(f"{name} \u00d7{m}" for name, m in summary[:limit])
    return text + (f", +{len(summary) - limit} more" if len(summary) > limit else "")


def conclude(findings: Findings, corpus: Corpus, recipe, dataset_order: str | None = None) -> Findings:
    """Fills per-class confidence and recomputes the verdict with the recipe's knobs and the checks' order."""
    hier = corpus.hierarchy
    classes = tuple(replace(c, confidence=class_confidence(c, hier, recipe.merge_distance)) for c in findings.classes)
    verdict = model_verdict(list(classes), corpus, recipe.verdict_max_span, recipe.verdict_min_depth,
                            min_found=recipe.verdict_min_found, min_fraction=recipe.verdict_min_fraction,
                            vague=recipe.verdict_vague, merge_distance=recipe.merge_distance,
                            dataset_order=dataset_order)
    return replace(findings, classes=classes, verdict=verdict)
