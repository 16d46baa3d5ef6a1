"""The corpus-based domain search (Zhang et al., §4; METHOD.md steps 1-5).

Pure algorithm: it sees a :class:`~plugin.core.blackbox.BlackBox` and a
:class:`~plugin.core.corpus.Corpus` and nothing else, no MLflow and no files.
Step 1 is :mod:`plugin.core.scores`, steps 2-4 :mod:`plugin.core.clusters`,
step 5 :mod:`plugin.core.verdict`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from plugin.core.blackbox import BlackBox
from plugin.core.clusters import ClassSearch, choose_clusters, class_clusters, finalize_class, runner_up, top_leaves
from plugin.core.corpus import Corpus
from plugin.core.errors import CorpusError
from plugin.core.findings import Findings, LeafSpend
from plugin.core.flags import model_flags
from plugin.core.recipe import Recipe
from plugin.core.scores import Progress, ScorePass, effective_min_samples, functional_scores, leaf_spend
from plugin.core.verdict import model_verdict


def _scaled(sp: ScorePass, recipe: Recipe) -> Recipe:
    """Generality scales with what a leaf can supply (scores.effective_min_samples); findings keep the recipe as given."""
    return recipe.replace(min_samples=effective_min_samples(sp, recipe))


def _steps_2_to_4(sp: ScorePass, corpus: Corpus, recipe: Recipe, cache: dict | None):
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


def _choose(sp: ScorePass, corpus: Corpus, recipe: Recipe, cache: dict):
    scaled = _scaled(sp, recipe)
    options = class_clusters(sp, corpus, scaled, cache)
    return options, choose_clusters(options, corpus, scaled, sp.leaves)


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


def score_pass(blackbox: BlackBox, corpus: Corpus, recipe: Recipe, progress: Progress | None = None,
               reserve: int = 0, groups_cache: dict | None = None) -> ScorePass:
    """Step 1 as the search runs it: the adaptive pass may stop once steps 2-4 are settled.

    ``groups_cache`` (one per pass) lets the caller's own steps 2-4 reuse the clusterings the checks made.
    """
    cache = {} if groups_cache is None else groups_cache  # one pass: its rounds ask for the same candidate sets again
    return functional_scores(blackbox, corpus, recipe, progress, reserve=reserve,
                             choice=lambda sp: chosen_leaves(sp, corpus, recipe, cache))


@dataclass
class SearchResult:
    findings: Findings
    scores: ScorePass
    classes: list[ClassSearch]


def search(blackbox: BlackBox, corpus: Corpus, recipe: Recipe, model: str = "model", progress: Progress | None = None,
           reserve: int = 0) -> SearchResult:
    """Runs steps 1-5 for every class of ``blackbox`` on ``corpus``.

    ``reserve`` queries of the recipe's ``query_budget`` are left for the follow-up checks.
    """
    if corpus.hierarchy is None:
        raise CorpusError(f"corpus {corpus.name!r} is flat; the search needs a hierarchical corpus")
    cache: dict = {}
    sp = score_pass(blackbox, corpus, recipe, progress, reserve=reserve, groups_cache=cache)
    logged = recipe
    recipe = _scaled(sp, recipe)
    options, chosen = _steps_2_to_4(sp, corpus, logged, cache)
    classes = [finalize_class(i, c, top_leaves(i, sp, corpus, recipe), sp, corpus, recipe,
                              runner_up(o, c, corpus, recipe, sp.leaves)) for i, (o, c) in enumerate(zip(options, chosen))]
    found = [c.finding for c in classes]
    findings = Findings(model=model, num_classes=sp.counts.shape[0], queries=sp.queries, recipe=logged.to_dict(),
                        classes=tuple(found), verdict=model_verdict(found, corpus, recipe.verdict_max_span, recipe.verdict_min_depth), corpus=corpus.name,
                        flags=model_flags(found, sp, corpus.hierarchy, recipe),
                        leaf_spend=tuple(LeafSpend(s, n, q) for s, n, q in leaf_spend(sp, recipe.copies_per_image)),
                        exhaustive_queries=sp.exhaustive_queries)
    return SearchResult(findings, sp, classes)
