"""The corpus-based domain search (Zhang et al., §4; METHOD.md steps 1-5).

Pure algorithm: it sees a :class:`~plugin.core.blackbox.BlackBox` and a
:class:`~plugin.core.corpus.Corpus` and nothing else, no MLflow and no files.
Step 1 is :mod:`plugin.core.scores`, steps 2-4 :mod:`plugin.core.clusters`,
step 5 :mod:`plugin.core.verdict`.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from plugin.core.blackbox import BlackBox
from plugin.core.clusters import (ClassSearch, Cluster, class_clusters, eligible, finalize_class, leaf_regions,
                                  runner_up, top_leaves, weighed_choice)
from plugin.core.corpus import Corpus
from plugin.core.errors import CorpusError
from plugin.core.findings import Findings, LeafSpend
from plugin.core.flags import model_flags
from plugin.core.recipe import Recipe
from plugin.core.scores import (Progress, Resampler, ScorePass, effective_min_samples, filter_images, functional_scores,
                                image_labels, leaf_spend, optimistic, unrefined, wilson_lower_bound, wilson_upper_bound)
from plugin.core.verdict import model_verdict


def _scaled(sp: ScorePass, recipe: Recipe) -> Recipe:
    """Generality scales with what a leaf can supply (scores.effective_min_samples); findings keep the recipe as given."""
    return recipe.replace(min_samples=effective_min_samples(sp, recipe))


class Choice(NamedTuple):
    """Steps 2-4 on one pass state: per class its candidate clusters, its pool, the pool's keys, and the choice."""

    options: list[list[Cluster]]
    chosen: list[Cluster | None]
    pools: list[list[Cluster]]
    keys: list[list[float]] | None  # None when not asked for (:func:`_choose`)


def _steps_2_to_4(sp: ScorePass, corpus: Corpus, recipe: Recipe, cache: dict | None) -> Choice:
    """Per class its candidate clusters, and the chosen clusters; memoised per pass state.

    The adaptive pass takes this choice after each round, and once it settles, the search takes it
    again on the very same scores: the memo (keyed on what steps 2-4 read) spares that second run.
    ``cache`` belongs to one pass with one recipe (the search's), so the key leaves both out.
    """
    if cache is None:
        return _choose(sp, corpus, recipe, {})
    memo, key = cache.setdefault("choices", {}), _fingerprint(sp)
    if key not in memo:
        if len(memo) >= 2:  # keep the last two (a round's choice and its settle check's): memory stays flat
            del memo[next(iter(memo))]
        memo[key] = _choose(sp, corpus, recipe, cache)
    return memo[key]


def _choose(sp: ScorePass, corpus: Corpus, recipe: Recipe, cache: dict, with_keys: bool = True) -> Choice:
    scaled = _scaled(sp, recipe)
    options = class_clusters(sp, corpus, scaled, cache)
    regions = (leaf_regions(sp, corpus.hierarchy, scaled, {j for o in options for c in o for j in c.members}, cache)
               if scaled.domain_radius > 0 else None)
    chosen, pools, keys = weighed_choice(options, corpus, scaled, sp.leaves, sp.takers, regions, with_keys)
    return Choice(options, chosen, pools, keys)


def _fingerprint(sp: ScorePass) -> bytes:
    """What steps 2-4 read of a pass (labels follow from the images sent, within one pass)."""
    h = hashlib.blake2b(digest_size=16)
    for a in (sp.counts, sp.totals, sp.n_images, sp.capacity):
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.digest()


def chosen_leaves(sp: ScorePass, corpus: Corpus, recipe: Recipe,
                  groups_cache: dict | None = None) -> list[tuple[int, ...] | None]:
    """Steps 2-4 on a pass: per class, the leaf indices of its chosen cluster (``None`` when none).

    ``groups_cache`` (see :func:`~plugin.core.clusters.class_clusters`) is shared by the calls of one pass.
    """
    return [c.members if c else None for c in _steps_2_to_4(sp, corpus, recipe, groups_cache)[1]]


def answer_of(c: Cluster | None):
    """What a class's answer is, for counting resamples: its domain, or ``None`` when it is not found."""
    if c is None or c.weak:
        return None
    return c.domain or c.members  # a custom tree without a common root: the leaves themselves


@dataclass(frozen=True)
class Stability:
    """How often each class's answer comes back when the pass's evidence is resampled.

    Attributes:
        votes: per class, resamples per answer (:func:`answer_of`).
        modal: per class, the answer most resamples return (ties to the answer on the full evidence).
        share: per class, the share of resamples returning ``modal``.
        contested: per leaf, whether some resample put it in the chosen cluster of an unstable class.
        resamples: how many resamples were drawn (0: no bootstrap, every answer counts as stable).
    """

    votes: tuple[Counter, ...]
    modal: tuple
    share: np.ndarray
    contested: np.ndarray
    resamples: int
    agree: Callable = field(default=lambda a, b: a == b, compare=False)

    def share_of(self, i: int, answer) -> float:
        """The share of resamples returning ``answer`` (or one in the same domain) for class ``i``."""
        if not self.resamples:
            return 1.0
        return sum(k for x, k in self.votes[i].items() if self.agree(answer, x)) / self.resamples


def _agreement(hier, merge_distance: float) -> Callable:
    """Whether two answers name one domain: both not found, or domains closer than ``merge_distance``.

    The clustering merges clusters whose medoids are that close, so "coat" and
    "garment" (1 hop) are one answer at two levels of generality, while
    "garment" and "digit" (14 hops) are two answers.
    """
    memo: dict = {}

    def agree(a, b) -> bool:
        if a == b or a is None or b is None or isinstance(a, tuple) or isinstance(b, tuple):
            return a == b
        key = (a, b) if a < b else (b, a)
        if key not in memo:  # the same few domains, asked for every pair of resamples
            memo[key] = hier.distance(a, b) < merge_distance
        return memo[key]

    return agree


def stability(sp: ScorePass, corpus: Corpus, recipe: Recipe, cache: dict | None = None) -> Stability:
    """Bootstrap over images within leaves (``stability_resamples``), steps 2-4 on each resample; no queries.

    Each leaf's images are drawn with replacement (their copies with them), and
    the search's own steps 2-4 run on the resampled counts. A class's stability
    is the share of resamples that return its modal answer: an answer that a
    handful of images decided flips, one that the evidence carries holds.
    Memoised per pass state, like steps 2-4: the adaptive pass's last round and
    the search ask for the same.
    """
    cache = {} if cache is None else cache
    memo, key = cache.setdefault("stability", {}), _fingerprint(sp)
    if key in memo:
        return memo[key]
    chosen = _steps_2_to_4(sp, corpus, recipe, cache).chosen
    full = [answer_of(c) for c in chosen]
    n, b = len(chosen), recipe.stability_resamples
    votes = [Counter() for _ in range(n)]
    seen: list[set[int]] = [set(c.members) if c else set() for c in chosen]
    if b:
        draws = Resampler(sp, recipe)
        rng = np.random.default_rng([recipe.seed, 19])  # the same resamples for the same evidence
        for _ in range(b):
            for i, c in enumerate(_choose(draws.draw(rng), corpus, recipe, cache, with_keys=False).chosen):
                votes[i][answer_of(c)] += 1
                if c is not None:
                    seen[i].update(c.members)
    agree = _agreement(corpus.hierarchy, recipe.merge_distance)
    modal = tuple(max(v, key=lambda a, v=v, f=f: (sum(k for x, k in v.items() if agree(a, x)), agree(a, f), v[a]))
                  if v else f for v, f in zip(votes, full))
    share = np.array([sum(k for x, k in v.items() if agree(m, x)) / b if b else 1.0 for v, m in zip(votes, modal)])
    # An unstable class's contest: every leaf some resample chose for it, and its strong candidates
    # (a cluster's score pools its leaves, so a leaf measured on a few images moves the race).
    contested = np.zeros(len(sp.leaves), dtype=bool)
    unstable = np.flatnonzero(share < recipe.stability_min)
    if len(unstable):
        adjusted, order = sp.ranked(recipe.confidence_z)
        top = order[unstable, : recipe.top_k]
        strong = np.take_along_axis(adjusted[unstable], top, axis=1) >= recipe.threshold
        contested[top[strong]] = True
        for i in unstable:
            contested[list(seen[i])] = True
    out = Stability(tuple(votes), modal, share, contested, b, agree)
    if len(memo) >= 2:
        del memo[next(iter(memo))]
    memo[key] = out
    return out


def score_pass(blackbox: BlackBox, corpus: Corpus, recipe: Recipe, progress: Progress | None = None,
               reserve: int = 0, groups_cache: dict | None = None) -> ScorePass:
    """Step 1 as the search runs it: the adaptive pass queries until every class's answer is stable.

    ``groups_cache`` (one per pass) lets the caller's own steps 2-4 reuse the clusterings the checks made.
    """
    cache = {} if groups_cache is None else groups_cache  # one pass: its rounds ask for the same candidate sets again

    def settle(sp: ScorePass) -> tuple[np.ndarray, int]:
        # Settled: every answer stable under the bootstrap, no leaf the pass has barely measured could
        # still overturn one, and none ties, or nearly ties, with another cluster of leaves (the bootstrap
        # only resamples what was sent: a tie comes back in every resample, and so does 16 of 16).
        st = stability(sp, corpus, recipe, cache)
        choice = _steps_2_to_4(sp, corpus, recipe, cache)
        rivals = (overturners(sp, corpus, recipe, choice.chosen, st.agree, cache)
                  | ties(sp, choice.options, choice.chosen, _scaled(sp, recipe)) | near_ties(sp, choice, recipe))
        return st.contested | rivals.any(axis=0), int(((st.share < recipe.stability_min) | rivals.any(axis=1)).sum())

    return functional_scores(blackbox, corpus, recipe, progress, reserve=reserve, settle=settle)


def overturners(sp: ScorePass, corpus: Corpus, recipe: Recipe, chosen: list[Cluster | None], agree: Callable,
                cache: dict | None = None) -> np.ndarray:
    """Per class and leaf, whether more images of the leaf could still overturn the class's answer.

    Steps 2-4 run once more on :func:`~plugin.core.scores.optimistic`: every
    rough rival at its upper bound, each class's chosen leaves as measured. A
    class whose answer then changes (``agree``: not the same domain) is not
    settled, and the raised leaves of its new choice stay open. The question
    is the objective's, coherence and the sink term included: a coat leaf at
    11 of 16 images loses to a digit sink at 0.86, and wins once measured,
    while a rough leaf that could not change the answer at its best closes.
    ``chosen`` is the choice on ``sp`` itself; ``cache`` is the pass's.
    """
    spare = np.zeros(sp.scores.shape, dtype=bool)
    for i, c in enumerate(chosen):
        if c is not None:
            spare[i, list(c.members)] = True
    best, raised = optimistic(sp, recipe, spare)
    out = np.zeros(sp.scores.shape, dtype=bool)
    if not raised.any():
        return out
    for i, (c, alt) in enumerate(zip(chosen, _choose(best, corpus, recipe, {} if cache is None else cache,
                                                     with_keys=False).chosen)):
        if alt is not None and not agree(answer_of(alt), answer_of(c)):
            out[i, list(alt.members)] = raised[i, list(alt.members)]
    return out


def ties(sp: ScorePass, options: list[list[Cluster]], chosen: list[Cluster | None], recipe: Recipe) -> np.ndarray:
    """Per class and leaf, whether the leaf is in a tie for the class that more images could break.

    Two sibling leaves at 4 of 4 images score the same, with the same
    neighbours around them: their clusters tie to the last digit, and every
    bootstrap resample ties them again, so the choice falls to the order of
    the leaves (a digits model's "eight" class on the "one" leaf, which it
    takes at 0.88, rather than "eight" at 0.99). A tie is an eligible cluster
    with the chosen one's objective and other leaves; its leaves, and the
    chosen ones, stay open while they can still grow and their score's
    half-width at ``confidence_z``, counting images, is above
    ``adaptive_precision``. ``recipe`` is the scaled one (eligibility reads its ``min_samples``).
    """
    out = np.zeros(sp.scores.shape, dtype=bool)
    for i, (o, c) in enumerate(zip(options, chosen)):
        if c is None or c.weak:
            continue
        tied = [x for x in eligible(o, recipe) if x.members != c.members
                and round(x.objective, 12) == round(c.objective, 12)]  # the choice's own rounding
        if tied:
            leaves = sorted({j for x in tied + [c] for j in x.members})
            out[i, leaves] = unrefined(sp, recipe, leaves)[i]
    return out


def near_ties(sp: ScorePass, choice: Choice, recipe: Recipe) -> np.ndarray:
    """Per class and leaf, whether the leaf is in a race for the class that its unsent images could still turn.

    A bootstrap cannot move a leaf it saw at 16 of 16 (a trouser leaf at 1.0
    that the exhaustive pass measures at 0.92), and the choice between
    {trouser} and {trouser, dress} may hang on a few hundredths. A rival is
    any other cluster of the class's pool (``choice.pools``); the race is on
    the keys the choice maximised (objective and coherence). It is open while
    the chosen key's lead is within what the two clusters' leaves could still
    move it: each leaf's rate shifted by its half-width at ``confidence_z``,
    counting images, with the finite-population factor (a leaf sent all it
    can supply is known), in the direction that hurts the chosen cluster.
    The leaves of both clusters that can still grow stay open.
    """
    out = np.zeros(sp.scores.shape, dtype=bool)
    n, cap = np.asarray(sp.n_images, dtype=float), np.asarray(sp.capacity, dtype=float)
    p, z = sp.scores, recipe.confidence_z
    images = np.maximum(n, 1)[None, :]
    fpc = np.sqrt(np.maximum(cap - n, 0) / np.maximum(cap - 1, 1))[None, :]
    half = (wilson_upper_bound(p, images, z) - wilson_lower_bound(p, images, z)) / 2 * fpc
    tot, support = np.asarray(sp.totals, dtype=float), np.asarray(sp.support, dtype=float)
    for i, (c, pool, keys) in enumerate(zip(choice.chosen, choice.pools, choice.keys)):
        at = next((k for k, x in enumerate(pool) if x is c), None)
        if c is None or c.weak or at is None:
            continue
        for x, kx in zip(pool, keys):
            leaves = sorted(set(c.members) | set(x.members))
            h = half[i, leaves]
            gap = keys[at] - kx
            # A pooled rate moves at most its leaves' largest shift, and the bound about as much (twice: safe).
            if x.members == c.members or not h.any() or gap > 2 * recipe.alpha * h.max():
                continue
            wc = np.where(np.isin(leaves, c.members), tot[leaves], 0.0)
            wx = np.where(np.isin(leaves, x.members), tot[leaves], 0.0)
            wc, wx = wc / wc.sum(), wx / wx.sum()
            moved = np.clip(p[i, leaves] - h * np.sign(wc - wx), 0, 1)
            fc = wilson_lower_bound(float(moved @ wc), support[list(c.members)].sum(), z)
            fx = wilson_lower_bound(float(moved @ wx), support[list(x.members)].sum(), z)
            if gap <= recipe.alpha * ((c.functional - fc) - (x.functional - fx)) + 1e-12:
                out[i, leaves] |= h > 0
    return out


def modal_choice(options: list[list[Cluster]], chosen: list[Cluster | None], st: Stability,
                 recipe: Recipe) -> list[Cluster | None]:
    """Per class the cluster of its modal answer: the chosen one if it has it, else the best eligible one that does.

    ``recipe`` is the scaled one (its ``min_samples`` is what eligibility reads).
    """
    out = []
    for o, c, m in zip(options, chosen, st.modal):
        if m is None or st.agree(answer_of(c), m):
            out.append(c)
            continue
        pool = [x for x in eligible(o, recipe) if st.agree(answer_of(x), m)]
        out.append(max(pool, key=lambda x: (round(x.objective, 12), len(x.members))) if pool else c)
    return out


def _real_hits(i: int, members, sp: ScorePass, filtered: dict[int, np.ndarray], recipe: Recipe) -> list[tuple[int, int]]:
    """Step 4 on real images: ``(leaf, image)`` of ``members`` that came back as class ``i``."""
    out = []
    for j in members:
        sent = image_labels(sp.labels[j], recipe)
        more = filtered.get(j, np.zeros(0, np.int64))
        out += [(j, int(k)) for k in np.flatnonzero(np.concatenate([sent, more]) == i)]
    return out


@dataclass
class SearchResult:
    findings: Findings
    scores: ScorePass
    classes: list[ClassSearch]


def search(blackbox: BlackBox, corpus: Corpus, recipe: Recipe, model: str = "model", progress: Progress | None = None,
           reserve: int = 0) -> SearchResult:
    """Runs steps 1-5 for every class of ``blackbox`` on ``corpus``.

    Step 1 is the score pass; steps 2-3 choose a cluster per class, and the
    bootstrap (:func:`stability`) says how often that answer comes back; the
    modal answer is used. Step 4 then queries unsent images of the chosen
    leaves of every stable class (until ``min_samples`` came back, or all of
    them with ``filter_all``), and a class is found only when at least
    ``min_samples`` of its chosen leaves' images really come back as it, and
    it takes the plurality of one of its chosen leaves at least. A class
    whose answer holds in fewer than ``stability_min`` of the resamples is
    ``uncertain``, not found; the verdict and the flags read found classes only.
    ``reserve`` queries of the recipe's ``query_budget`` are left for the follow-up checks.
    """
    if corpus.hierarchy is None:
        raise CorpusError(f"corpus {corpus.name!r} is flat; the search needs a hierarchical corpus")
    cache: dict = {}
    sp = score_pass(blackbox, corpus, recipe, progress, reserve=reserve, groups_cache=cache)
    logged = recipe
    recipe = _scaled(sp, recipe)
    options, chosen = _steps_2_to_4(sp, corpus, logged, cache)[:2]
    st = stability(sp, corpus, logged, cache)
    chosen = modal_choice(options, chosen, st, recipe)
    shares = [st.share_of(i, answer_of(c)) for i, c in enumerate(chosen)]
    stable = [c is not None and not c.weak and s >= recipe.stability_min for c, s in zip(chosen, shares)]
    # Step 4 for the stable classes: until min_samples real images came back (filter_all: every unsent image).
    wanted = {i: (c.members, None if recipe.filter_all else
                  recipe.min_samples - len(_real_hits(i, c.members, sp, {}, recipe)))
              for i, (c, ok) in enumerate(zip(chosen, stable)) if ok}
    filtered = filter_images(blackbox, corpus, recipe, sp, wanted, progress, reserve, spent=sp.queries)
    filter_queries = sum(len(v) for v in filtered.values())
    classes = []
    for i, (o, c) in enumerate(zip(options, chosen)):
        hits = _real_hits(i, c.members, sp, filtered, recipe) if c is not None else []
        # Found where the model answers the class more than any other, on one chosen leaf at least: a class
        # that only shares another class's leaves is not told apart there (a digits model on the corpus
        # without digits: its "boot" class on the boot leaf, which its "footwear" class takes).
        owns = c is not None and any(int(sp.takers[j]) == i for j in c.members)
        status = ("not-found" if c is None or c.weak else "uncertain" if not stable[i]
                  else "found" if len(hits) >= recipe.min_samples and owns else "not-found")
        classes.append(finalize_class(i, c, top_leaves(i, sp, corpus, recipe), sp, corpus, recipe,
                                      runner_up(o, c, corpus, recipe, sp.leaves), samples=hits,
                                      status=status, stability=shares[i]))
    found = [c.finding for c in classes]
    findings = Findings(model=model, num_classes=sp.counts.shape[0], queries=sp.queries + filter_queries,
                        recipe=logged.to_dict(), classes=tuple(found),
                        verdict=model_verdict(found, corpus, recipe.verdict_max_span, recipe.verdict_min_depth),
                        corpus=corpus.name, flags=model_flags(found, sp, corpus.hierarchy, recipe),
                        leaf_spend=tuple(LeafSpend(s, n, q + len(filtered.get(j, ())), len(filtered.get(j, ())))
                                         for j, (s, n, q) in enumerate(leaf_spend(sp, recipe.copies_per_image))),
                        exhaustive_queries=sp.exhaustive_queries, filter_queries=filter_queries)
    return SearchResult(findings, sp, classes)
