"""Steps 2-4 of the search: candidates, K-medoids clusters, the objective, coherence, filtering."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from plugin.core.corpus import Corpus
from plugin.core.findings import ClassFinding, LeafScore, Node, RunnerUp
from plugin.core.recipe import Recipe
from plugin.core.scores import ScorePass, image_labels, wilson_lower_bound


def kmedoids_labels(dist: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K-medoids on a precomputed distance matrix; returns (labels, medoid indices).

    FasterPAM from the random start that ``KMedoids(random_state=seed)`` draws,
    with the same seed for its processing order: the same result. The start
    is cached, since seeding a ``RandomState`` took 100 us of a 2 us fit and
    the adaptive pass's settle checks run hundreds of small fits.
    """
    n = len(dist)
    if k >= n:
        return np.arange(n), np.arange(n)
    if k == 1:
        medoid = int(np.argmin(dist.sum(axis=1)))
        return np.zeros(n, dtype=int), np.array([medoid])
    import warnings

    import kmedoids

    with warnings.catch_warnings():  # "seed will be ignored": it is not, it orders the swaps
        warnings.simplefilter("ignore")
        result = kmedoids.fasterpam(np.ascontiguousarray(dist, dtype=float), _random_start(n, k, seed).copy(),
                                    max_iter=300, random_state=seed)
    return np.asarray(result.labels), np.asarray(result.medoids)


@lru_cache(maxsize=4096)
def _random_start(n: int, k: int, seed: int) -> np.ndarray:
    """The initial medoids ``kmedoids`` draws for ``init="random"`` (``RandomState(seed).choice``)."""
    return np.random.RandomState(seed).choice(n, k, False).astype(np.uintp)


def merge_clusters(labels: np.ndarray, medoids: np.ndarray, dist: np.ndarray, merge_distance: float) -> list[list[int]]:
    """Merges clusters whose medoids are closer than ``merge_distance`` (union-find)."""
    k = len(medoids)
    root = list(range(k))

    def find(a):
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    for a in range(k):
        for b in range(a + 1, k):
            if dist[medoids[a], medoids[b]] < merge_distance:
                root[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for idx, lab in enumerate(labels):
        groups.setdefault(find(int(lab)), []).append(idx)
    return [sorted(g) for g in groups.values()]


@dataclass
class ClassSearch:
    """Intermediate, non-JSON details of one class (samples for montages)."""

    finding: ClassFinding
    samples: list[tuple[int, int]] = field(default_factory=list)  # (leaf index, image index)


def _semantics(groups: list[tuple[tuple[int, ...], list[int]]], dist: np.ndarray, hier, leaves: list[str],
               recipe: Recipe) -> dict[tuple[int, ...], tuple[float, str | None]]:
    """Per group, S (mean closeness of its members) and the domain (their LCA): leaves, not scores, decide them.

    ``groups``: ``(member leaves, positions in the candidates)``; ``dist``: the candidates' distances.
    Groups of one size are done in one gather (each S bit for bit its own mean).
    """
    out = {m: (recipe.singleton_semantic, leaves[m[0]]) for m, _ in groups if len(m) == 1}  # a node is its own LCA
    # Candidates are sorted, so the sorted positions are the members' rows, in the members' order.
    multi = [(m, tuple(sorted(local))) for m, local in groups if len(m) > 1]
    if not multi:
        return out
    close = 1.0 / np.where(dist > 0, dist, 1.0)  # 1 / d, and 1.0 for the same node
    for k, at in _by_size([local for _, local in multi]):
        pairs = close[at[:, :, None], at[:, None, :]][:, ~np.eye(at.shape[1], dtype=bool)]
        for c, s in zip(k.tolist(), pairs.mean(axis=1).tolist()):
            m = multi[c][0]
            out[m] = (s, hier.lca([leaves[a] for a in m]))
    return out


@dataclass(frozen=True)
class Cluster:
    """One scored candidate cluster of leaves for one class."""

    members: tuple[int, ...]
    functional: float
    semantic: float
    objective: float
    n_samples: int
    domain: str | None
    weak: bool = False  # below threshold: a domain guess, not a finding
    absorbed: float = 0.0  # the class's mean score on the leaves around the cluster (the sink null model)


def class_clusters(sp: ScorePass, corpus: Corpus, recipe: Recipe, cache: dict | None = None,
                   classes: Sequence[int] | None = None) -> list[list[Cluster]]:
    """Steps 2-3 for every class (or ``classes``): candidates, K-medoids over K, merging, scoring.

    Strong candidates pass the threshold on the support-adjusted score. If no
    strong cluster of a class supplies ``min_samples`` filtered images (the
    true leaf may be missing, or only tiny leaves respond), the class is not
    found, but we still guess a domain from where its responses come from:
    leaves ranked by their share of the class's hits, so one image labelled i
    counts less than many (weak clusters). ``cache`` keeps the K-medoids
    groups of a candidate set and the semantics of a member set: they depend
    on the leaves, not on their scores, and the adaptive pass asks for the
    same sets round after round. The classes are scored together, a few
    array operations for all of them, not a dozen per class.
    """
    classes = list(range(sp.counts.shape[0]) if classes is None else classes)
    cache = {} if cache is None else cache
    adjusted, order = sp.ranked(recipe.confidence_z)
    top = order[classes, : recipe.top_k]
    is_strong = np.take_along_axis(adjusted[classes], top, axis=1) >= recipe.threshold
    strong = [row[keep].tolist() for row, keep in zip(top, is_strong)]
    out = _clusters(list(zip(classes, strong)), sp, corpus.hierarchy, recipe, False, recipe.singleton_candidates, cache)
    guess = [k for k, found in enumerate(out) if not any(c.n_samples >= recipe.min_samples for c in found)]
    if guess:
        hits = sp.hits_at_capacity[[classes[k] for k in guess]]
        by_hits = np.argsort(-hits, axis=1, kind="stable")[:, : recipe.top_k]
        enough = np.take_along_axis(hits, by_hits, axis=1) >= recipe.weak_min_hits
        weak = _clusters([(classes[k], row[keep].tolist()) for k, row, keep in zip(guess, by_hits, enough)],
                         sp, corpus.hierarchy, recipe, True, False, cache)
        for k, found in zip(guess, weak):
            out[k] = found
    return out


def top_leaves(i: int, sp: ScorePass, corpus: Corpus, recipe: Recipe) -> tuple[LeafScore, ...]:
    """Class ``i``'s ``top_k`` leaves by support-adjusted score (ties to the raw score), for its finding."""
    hier = corpus.hierarchy
    adjusted, order = (m[i] for m in sp.ranked(recipe.confidence_z))
    top = order[: recipe.top_k]
    return tuple(LeafScore(sp.leaves[j], hier.name(sp.leaves[j]), r, a)
                 for j, r, a in zip(top.tolist(), sp.scores[i, top].tolist(), adjusted[top].tolist()))


def _groups(cand: list[int], leaves: list[str], hier, recipe: Recipe,
            singletons: bool) -> tuple[list[tuple[tuple[int, ...], list[int]]], np.ndarray]:
    """The K-medoids groups of ``cand`` (sorted leaf indices), and the candidates' distances as the tree gives them.

    Each group once, in order of first appearance, as ``(member leaves, positions in cand)``.
    """
    raw = hier.distance_matrix([leaves[j] for j in cand])
    dist = np.where(np.isfinite(raw), raw, 100.0)  # disconnected custom roots: far apart
    found = []
    for k in range(recipe.k_min, min(recipe.k_max, len(cand)) + 1):
        labs, meds = kmedoids_labels(dist, k, recipe.seed)
        found += merge_clusters(labs, meds, dist, recipe.merge_distance)
    if singletons:
        # Every strong leaf alone, too (K = n): with k_max 4, six responsive garments never split,
        # and a trouser class would have to take a cluster without the trouser leaf.
        found += [[g] for g in range(len(cand))]
        found += _neighbourhoods(np.where(np.isfinite(raw), raw, 100.0), recipe.merge_distance)
    groups: dict[tuple[int, ...], list[int]] = {}
    for group in found:
        groups.setdefault(tuple(sorted(cand[g] for g in group)), group)
    return list(groups.items()), raw


def _neighbourhoods(dist: np.ndarray, merge_distance: float) -> list[list[int]]:
    """Each candidate with the candidates within r hops of it, for every r that keeps them one cluster.

    A domain is a piece of the tree, and K-medoids over a sink class's 16
    candidates (digits, garments, faces) at k <= 4 rarely cuts out a small one:
    a shirt class that takes the shirt leaf and the T-shirt leaf below it
    (1 hop) had no cluster holding both. One cluster is what lies closer than
    ``merge_distance``, the distance at which the clustering merges two.
    """
    out = []
    for g, row in enumerate(dist):
        for r in np.unique(row[(row > 0) & (row < merge_distance)]):
            ball = np.flatnonzero(row <= r)
            if dist[np.ix_(ball, ball)].max() < merge_distance:
                out.append(ball.tolist())
    return out


def _clusters(requests: list[tuple[int, list[int]]], sp: ScorePass, hier, recipe: Recipe, weak: bool,
              singletons: bool, cache: dict) -> list[list[Cluster]]:
    """The scored clusters of each ``(class, candidate leaves)`` request, in order."""
    leaves = sp.leaves
    rows: list[int] = []  # per cluster: its request
    members: list[tuple[int, ...]] = []
    for r, (_, cand) in enumerate(requests):
        if not cand:
            continue
        # K-medoids sees the candidates in leaf order, not score order: its groups then depend on the
        # set alone, and the adaptive pass's rounds (and its settle checks) find them cached.
        cand = sorted(cand)
        key = (tuple(cand), singletons)
        if key not in cache:
            cache[key] = _groups(cand, leaves, hier, recipe, singletons)
        groups, dist = cache[key]
        cache.update(_semantics([g for g in groups if g[0] not in cache], dist, hier, leaves, recipe))
        rows += [r] * len(groups)
        members += [m for m, _ in groups]
    out: list[list[Cluster]] = [[] for _ in requests]
    if not members:
        return out
    cls = np.array([requests[r][0] for r in rows])
    sizes = _by_size(members)
    if weak:  # share of the class's responses, at full capacity (an adaptive pass sends leaves unequal numbers)
        hits = sp.hits_at_capacity
        functional = _member_sums(hits, cls, sizes) / np.maximum(hits.sum(axis=1), 1)[cls]
    else:
        every = np.zeros(len(members), dtype=int)  # per-leaf vectors: one row for every cluster
        rate = _member_sums(sp.counts, cls, sizes) / np.maximum(_member_sums(sp.totals[None], every, sizes), 1)
        functional = wilson_lower_bound(rate, _member_sums(np.asarray(sp.support)[None], every, sizes),
                                        recipe.confidence_z)
    # Filtered samples at full capacity (the filtered count itself after an exhaustive pass).
    supply = _member_sums(sp.filtered_at_capacity(recipe), cls, sizes)
    alpha = recipe.weak_alpha if weak else recipe.alpha
    absorbed = np.zeros(len(members)) if weak or recipe.sink_contrast <= 0 else \
        _surroundings(members, cls, sp, hier, recipe, cache)
    for r, m, f, n, a in zip(rows, members, np.asarray(functional, dtype=float).tolist(), supply.tolist(),
                             absorbed.tolist()):
        semantic, domain = cache[m]
        objective = alpha * f + (1 - alpha) * semantic - recipe.sink_contrast * a
        out[r].append(Cluster(m, f, semantic, objective, int(round(n)), domain, weak, a))
    return out


def _surroundings(members: list[tuple[int, ...]], cls: np.ndarray, sp: ScorePass, hier, recipe: Recipe,
                  cache: dict) -> np.ndarray:
    """Per cluster, the null model of a sink: what its class absorbs from the leaves around it.

    The mean support-adjusted score of the class over the leaves within
    ``sink_radius`` hops of a member that are not members and can supply
    ``min_samples`` images. A model with few
    classes sends whole subtrees to one class: a digit leaf then scores 1.0
    for "T-shirt" only because every digit does, and its neighbours say so.
    A true domain stands out from its surroundings: the neighbouring garments
    go to their own classes. A cluster that takes the whole subtree has no
    such neighbours left, so generality is not punished. The leaves around a
    member set are cached (they depend on the tree, not on the scores).
    """
    adjusted = sp.ranked(recipe.confidence_z)[0]
    new = [m for m in dict.fromkeys(members) if ("near", m) not in cache]
    if new:
        singles = sorted({j for m in new for j in m})
        big = np.asarray(sp.support) >= recipe.min_samples  # one photo is no evidence of what a class absorbs
        rows = dict(zip(singles, (_leaf_distances(hier, sp.leaves, singles, range(len(sp.leaves)))
                                  <= recipe.sink_radius) & big[None, :]))
        for m in new:
            near = np.logical_or.reduce([rows[j] for j in m])
            near[list(m)] = False
            cache[("near", m)] = np.flatnonzero(near)
    near = [cache[("near", m)] for m in members]
    sizes = np.fromiter(map(len, near), dtype=int, count=len(near))
    if not sizes.any():
        return np.zeros(len(members))
    owner = np.repeat(np.arange(len(members)), sizes)
    leaf = np.concatenate(near)
    total = np.bincount(owner, weights=adjusted[cls[owner], leaf], minlength=len(members))
    return total / np.maximum(sizes, 1)


def _by_size(members: list[tuple[int, ...]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The clusters of each size: ``(their positions, their members as a (count, size) array)``."""
    size = np.fromiter(map(len, members), dtype=int, count=len(members))
    return [(k, np.array([members[c] for c in k])) for k in (np.flatnonzero(size == m) for m in np.unique(size))]


def _member_sums(mat: np.ndarray, rows: np.ndarray, sizes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per cluster ``c``, ``mat[rows[c], members of c].sum()``; the clusters of one size in one gather.

    Bit for bit what ``sum()`` gives on each alone (numpy sums 8 or more terms
    pairwise, so a running sum such as ``reduceat`` would not be).
    """
    out = np.empty(sum(len(k) for k, _ in sizes))
    for k, idx in sizes:
        out[k] = mat[rows[k][:, None], idx].sum(axis=1)
    return out


def eligible(clusters: list[Cluster], recipe: Recipe) -> list[Cluster]:
    """Generality (slides: "a large fixed k"): prefer clusters that supply
    ``min_samples`` filtered images; fall back to all when none does."""
    big = [c for c in clusters if c.n_samples >= recipe.min_samples]
    return big or clusters


def choose_clusters(options: list[list[Cluster]], corpus: Corpus, recipe: Recipe, leaves: list[str],
                    takers: np.ndarray | None = None, regions: dict | None = None) -> list[Cluster | None]:
    """Picks one cluster per class (:func:`weighed_choice` without its pools and keys)."""
    return weighed_choice(options, corpus, recipe, leaves, takers, regions, with_keys=False)[0]


def weighed_choice(options: list[list[Cluster]], corpus: Corpus, recipe: Recipe, leaves: list[str],
                   takers: np.ndarray | None = None, regions: dict | None = None,
                   with_keys: bool = True) -> tuple[list[Cluster | None], list[list[Cluster]], list[list[float]] | None]:
    """Picks one cluster per class; returns the choice, each class's pool, and each pooled cluster's key.

    A domain before a sink: with ``regions`` (:func:`leaf_regions`) and
    ``takers`` (per leaf, the class taking most of its copies, -1 for none),
    a class chooses among the clusters whose region some *other* class also
    takes leaves of, when it has any (:func:`_domains_first`). Then each class
    alone by the α-objective (ties to the larger cluster: the paper prefers
    inclusive domains). Then, when ``coherence`` > 0, a few
    rounds of coordinate ascent add ``coherence`` x the mean closeness of a
    cluster's *leaves* to the leaves the model's other classes chose: the
    classes of one model usually share a domain, which breaks ties that
    out-of-domain leaves (a 3-class model labels *everything*) would otherwise
    win. Leaves, not LCA domains, because a generic domain ("whole") sits
    close to everything and would be rewarded for being vague. Coherence never
    moves an anchored class into another domain (:func:`_anchor_pools`), so a
    mixed model keeps both of its domains. A key is what the choice maximised:
    the objective plus the coherence bonus against the other classes' final
    choices (the adaptive pass reads a rival's margin on it). ``with_keys=False`` leaves them out
    (``None``): a bootstrap resample only needs the choice, and the keys cost a sixth of it.
    """
    pools = [eligible(o, recipe) for o in options]
    if regions is not None:
        pools = _domains_first(pools, regions, takers)
    chosen = [max(p, key=lambda c: (round(c.objective, 12), len(c.members))) if p else None for p in pools]
    if recipe.coherence <= 0:
        return chosen, pools, [[c.objective for c in p] for p in pools]
    pools = _anchor_pools(pools, chosen, corpus.hierarchy, leaves, recipe, takers)
    used = sorted({j for p in pools for c in p for j in c.members})
    if not used:
        return chosen, pools, [[c.objective for c in p] for p in pools]
    col = {j: k for k, j in enumerate(used)}
    dist = corpus.hierarchy.distance_matrix([leaves[j] for j in used])
    close = np.where(dist == 0, 1.0, 1.0 / np.where(np.isfinite(dist) & (dist > 0), dist, np.inf))

    def weights(c: Cluster | None) -> np.ndarray:
        w = np.zeros(len(used))
        if c is not None and not c.weak:
            w[[col[j] for j in c.members]] = 1.0 / len(c.members)  # each class counts once
        return w

    # Per pool: its leaves (rows of ``close``) and which cluster holds which, so a class's bonuses
    # are two small products, not one product per cluster.
    rows, holds = [], []
    for pool in pools:
        rows.append(sorted({col[j] for c in pool for j in c.members}))
        at = {k: n for n, k in enumerate(rows[-1])}
        holds.append(np.zeros((len(pool), len(rows[-1]))))
        for n, c in enumerate(pool):
            holds[-1][n, [at[col[j]] for j in c.members]] = 1.0

    def keyed(i: int, total: np.ndarray) -> list[float] | None:
        others = total - weights(chosen[i])
        n_others = others.sum()
        if n_others <= 0:  # no other class to be coherent with: the choice stays
            return None
        # A cluster's bonus: the mean closeness of its leaves to the other classes' chosen leaves.
        bonus = holds[i] @ (close[rows[i]] @ others) / holds[i].sum(axis=1) / n_others
        return [c.objective + recipe.coherence * b for c, b in zip(pools[i], bonus.tolist())]

    for _ in range(recipe.coherence_rounds):
        changed = False
        total = sum(weights(c) for c in chosen)
        for i, pool in enumerate(pools):
            bonused = keyed(i, total) if pool else None
            if bonused is None:
                continue
            keys = [(round(k, 12), len(c.members)) for c, k in zip(pool, bonused)]
            best = pool[max(range(len(pool)), key=keys.__getitem__)]
            if best is not chosen[i]:
                total += weights(best) - weights(chosen[i])
                chosen[i], changed = best, True
        if not changed:
            break
    if not with_keys:
        return chosen, pools, None
    total = sum(weights(c) for c in chosen)
    return chosen, pools, [(keyed(i, total) if pool else None) or [c.objective for c in pool]
                           for i, pool in enumerate(pools)]


def leaf_regions(sp: ScorePass, hier, recipe: Recipe, wanted, cache: dict) -> dict[int, np.ndarray]:
    """Per leaf of ``wanted``, its region: the leaves within ``domain_radius`` hops that can supply ``min_samples`` images.

    Depends on the tree and the leaves' capacity, not on the scores, so one
    pass (and every bootstrap resample of it) computes each leaf's once
    (``cache``), and only for leaves some candidate cluster holds.
    """
    regions = cache.setdefault("regions", {})
    new = sorted(set(wanted) - regions.keys())
    if new:
        big = np.asarray(sp.support) >= recipe.min_samples
        rows = _leaf_distances(hier, sp.leaves, new, range(len(sp.leaves))) <= recipe.domain_radius
        regions.update({j: np.flatnonzero(row & big) for j, row in zip(new, rows)})
    return regions


def _domains_first(pools: list[list[Cluster]], regions: dict[int, np.ndarray],
                   takers: np.ndarray) -> list[list[Cluster]]:
    """Per class, its clusters that lie in a domain, when it has one; else all of them.

    A model discriminates inside its domain: there, leaves near the cluster go
    to other classes too. A region that it sends wholesale to one class is a
    sink (a 2-class model's ankle boot class takes all ten digits at 1.0, as
    it takes the shoes; only around the shoes does the bag class take leaves
    too). The same rule keeps sinks out of ``mixed-domains``
    (:func:`plugin.core.flags.mixed_domain_flags`).
    """
    out = []
    for i, pool in enumerate(pools):
        keep = [c for c in pool if region_takers(c.members, takers, regions) - {i}]
        out.append(keep or pool)
    return out


def region_takers(members, takers: np.ndarray, regions: dict[int, np.ndarray]) -> set[int]:
    """The classes taking (by plurality) a leaf of ``members`` or of their regions (:func:`leaf_regions`)."""
    near = np.concatenate([np.asarray(members, dtype=int), *(regions[j] for j in members)])
    return set(np.asarray(takers)[near].tolist()) - {-1}


def domain_distance(hier, a: Cluster, b: Cluster) -> float:
    """Hops between two clusters' domains (their LCAs); far apart when the tree has no path."""
    if a.domain is None or b.domain is None:
        return float("inf")
    return float(hier.distance(a.domain, b.domain))


def _leaf_distances(hier, leaves: list[str], a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    d = np.asarray(hier.distance_matrix([leaves[j] for j in a], [leaves[j] for j in b]), dtype=float)
    return np.where(np.isfinite(d), d, 100.0)  # disconnected custom roots: far apart


def _anchor_pools(pools: list[list[Cluster]], own: list[Cluster | None], hier, leaves: list[str],
                  recipe: Recipe, takers: np.ndarray | None = None) -> list[list[Cluster]]:
    """Coherence may not move an *anchored* class into another domain.

    A class is anchored when its own best cluster is strong (functional score
    at least ``coherence_anchor_score``) and at least ``coherence_anchor_classes``
    other classes find their own best near it: a mixed model's digit classes
    anchor each other, so the garment classes cannot pull them over. An
    anchored class keeps to clusters whose every leaf lies near its own best.
    A lone out-of-domain best (``footwear``'s ankle boot on every digit, a
    sink) has no such support and stays open to coherence. Nor does an own
    best that is itself a sink: when ``takers`` (per leaf, the class taking
    most of its copies) give its leaves to fewer distinct classes than
    ``coherence_anchor_spread`` of them (seven digits all "T-shirt"), two such
    classes would otherwise anchor each other on a foreign subtree.
    """
    strong = [k for k, c in enumerate(own) if c is not None and not c.weak]
    used = sorted({j for k in strong for j in own[k].members})
    if not used:
        return pools
    pooled = sorted({j for pool in pools for c in pool for j in c.members})  # holds ``used`` (own bests are pooled)
    row, at = {j: n for n, j in enumerate(used)}, {j: n for n, j in enumerate(pooled)}
    dist = _leaf_distances(hier, leaves, used, pooled)  # one call: at most leaves x leaves, not pairs of clusters
    flat = np.array([at[j] for k in strong for j in own[k].members], dtype=int)
    starts = np.cumsum([0] + [len(own[k].members) for k in strong])[:-1]
    out = []
    for pool, c in zip(pools, own):
        if c is None or c.weak or c.functional < recipe.coherence_anchor_score or (
                takers is not None and len({int(takers[j]) for j in c.members}) < recipe.coherence_anchor_spread
                * len(c.members)):
            out.append(pool)
            continue
        # Per pooled leaf, the hops to the nearest leaf of the class's own best.
        near = dist[[row[j] for j in c.members]].min(axis=0)
        # Nearest leaf of every other class's own best, vectorised: a 1,000-class model has 1M pairs.
        nearest = np.minimum.reduceat(near[flat], starts)
        support = int((nearest < recipe.runner_up_min_distance).sum()) - 1  # less the class itself (distance 0)
        if support < recipe.coherence_anchor_classes:
            out.append(pool)
        else:  # only clusters whose every leaf lies near the own best
            close = (near < recipe.runner_up_min_distance).tolist()
            out.append([p for p in pool if all(close[at[j]] for j in p.members)])
    return out


def runner_up(options: list[Cluster], chosen: Cluster | None, corpus: Corpus, recipe: Recipe,
              leaves: list[str] | None = None) -> Cluster | None:
    """The best cluster of a class in another domain than the chosen one (a decoy, a second domain).

    Among the class's eligible clusters, those whose every leaf lies at least
    ``runner_up_min_distance`` hops from every chosen leaf; the best by the
    α-objective (ties to the larger). ``None`` when the class was not found or
    nothing far responds. ``leaves`` are the score pass's leaf synsets
    (default: the corpus's, in order).
    """
    if chosen is None or chosen.weak:
        return None
    hier = corpus.hierarchy
    leaves = leaves if leaves is not None else [l.synset for l in corpus.leaves]
    strong = [c for c in eligible(options, recipe) if not c.weak]
    pooled = sorted({j for c in strong for j in c.members})
    if not pooled:
        return None
    # Per leaf, far from every chosen leaf: one distance call for the class, not one per cluster.
    apart = dict(zip(pooled, (_leaf_distances(hier, leaves, chosen.members, pooled).min(axis=0)
                              >= recipe.runner_up_min_distance).tolist()))
    far = [c for c in strong if all(apart[j] for j in c.members)]
    return max(far, key=lambda c: (round(c.objective, 12), len(c.members))) if far else None


def finalize_class(i: int, cluster: Cluster | None, top: tuple[LeafScore, ...], sp: ScorePass, corpus: Corpus,
                   recipe: Recipe, second: Cluster | None = None, samples: list[tuple[int, int]] | None = None,
                   status: str | None = None, stability: float = 1.0) -> ClassSearch:
    """The typed finding of class ``i``; "not found" when no cluster.

    ``samples`` are step 4's ``(leaf, image)`` pairs that really came back as
    ``i`` (default: the pass's own images of the chosen leaves); ``n_samples``
    is their number. ``status`` is ``found``, ``uncertain`` or ``not-found``
    (default: found for any strong cluster). ``second`` is the class's
    :func:`runner_up`; the class is ``ambiguous`` when its functional score
    comes within ``ambiguity_margin`` of the chosen one.
    """
    if cluster is None:
        return ClassSearch(ClassFinding(i, False, (), None, 0.0, 0.0, 0.0, 0, top, stability=stability,
                                        status="not-found"))
    hier = corpus.hierarchy
    leaves = sp.leaves
    chosen = tuple(Node(leaves[j], hier.name(leaves[j])) for j in cluster.members)
    domain = Node(cluster.domain, hier.name(cluster.domain)) if cluster.domain else None
    if samples is None:
        samples = [(j, int(img)) for j in cluster.members
                   for img in np.flatnonzero(image_labels(sp.labels[j], recipe) == i)]
    status = status or ("not-found" if cluster.weak else "found")
    runner, ambiguous = None, False
    if second is not None:
        runner = RunnerUp(tuple(Node(leaves[j], hier.name(leaves[j])) for j in second.members),
                          Node(second.domain, hier.name(second.domain)) if second.domain else None,
                          second.functional, second.objective, domain_distance(hier, cluster, second))
        ambiguous = second.functional >= cluster.functional - recipe.ambiguity_margin
    finding = ClassFinding(i, status == "found", chosen, domain, cluster.functional, cluster.semantic,
                           cluster.objective, len(samples), top, runner_up=runner, ambiguous=ambiguous,
                           stability=stability, status=status)
    return ClassSearch(finding, list(samples))
