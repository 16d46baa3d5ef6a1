"""Re-measures the search defaults on the demo ground truth (README "Choosing the defaults").

One score pass per demo model (the expensive, query-spending part), then every
configuration of a small grid of search knobs on the same passes. The
candidate clusters depend on the candidate knobs only, so they are computed
once per candidate configuration and re-used for every coherence setting.

Scored: the fraction of fashion-model classes whose true leaf is in the chosen
cluster. Hard constraints: the open-world case (sneaker leaf removed) lands on
shoe/footwear; no ``digits`` class strays off digit leaves; every class of the
mixed model ``digits-fashion`` has its true leaf and only leaves of its own
source. Also printed: the planted-decoy model's classes (T: true leaf chosen,
P: planted digit chosen).

    python benchmarks/tune_defaults.py [--recipe demo]
"""
from __future__ import annotations

import argparse
import itertools

from plugin.models.torch_blackbox import TorchBlackBox
from plugin.demo.corpus import DIGIT_SYNSETS, FASHION_SYNSETS, load_demo_corpus
from plugin.demo.models import DEMO_MODELS, build_demo_models, model_dir
from plugin.core.recipe import Recipe
from plugin.core.clusters import candidate_clusters, choose_clusters
from plugin.core.scores import ScorePass, functional_scores

GYM_SHOE = "n03472535"
FASHION_MODELS = ["fashion10", "footwear", "upper-body"]
MIXED, DECOY = "digits-fashion", "fashion-decoy"
# Knobs that change the candidate clusters, and knobs that only change the choice among them.
CANDIDATE_GRID = dict(alpha=[0.4, 0.6], threshold=[0.2, 0.3], merge_distance=[3.0, 4.0],
                      top_k=[8, 16], singleton_candidates=[False, True])
CHOICE_GRID = dict(coherence=[0.0, 0.25, 0.5, 1.0], coherence_anchor_classes=[1, 99])  # 99: no anchoring


def drop_leaf(sp: ScorePass, corpus, synset: str):
    keep = [k for k, s in enumerate(sp.leaves) if s != synset]
    return (ScorePass([sp.leaves[k] for k in keep], sp.counts[:, keep], sp.totals[keep], sp.n_images[keep],
                      [sp.labels[k] for k in keep], sp.queries, 0.0), corpus.without([synset]))


def options_of(sp, corpus, recipe):
    return [candidate_clusters(i, sp, corpus, recipe)[0] for i in range(sp.counts.shape[0])]


def chosen(sp, corpus, recipe):
    return choose_clusters(options_of(sp, corpus, recipe), corpus, recipe, sp.leaves)


def evaluate(passes, truth, corpus, recipe, options=None):
    """``(fraction, open-world domain, digits stray, mixed correct, decoy pattern)`` for one recipe."""
    options = options or {}

    def pick(name, sp, c=corpus):
        opts = options.get(name) or options_of(sp, c, recipe)
        return choose_clusters(opts, c, recipe, sp.leaves)

    hits = total = 0
    for name in FASHION_MODELS:
        sp = passes[name]
        for i, c in enumerate(pick(name, sp)):
            total += 1
            hits += bool(c) and truth["models"][name]["classes"][i] in {sp.leaves[j] for j in c.members}
    sp = passes["digits"]
    digits = set(truth["models"]["digits"]["classes"])
    stray = sum(not (c and {sp.leaves[j] for j in c.members} <= digits) for c in pick("digits", sp))
    sp2, c2 = drop_leaf(passes["footwear"], corpus, GYM_SHOE)
    sneaker = pick("footwear-open", sp2, c2)[1]
    open_world = c2.hierarchy.name(sneaker.domain) if sneaker and sneaker.domain else None
    mixed_ok = decoy = None
    if MIXED in passes:
        spec, sp = DEMO_MODELS[MIXED], passes[MIXED]
        mixed_ok = 0
        for c, (source, _), true in zip(pick(MIXED, sp), spec.sources, spec.synsets):
            members = {sp.leaves[j] for j in c.members} if c else set()
            own = set(DIGIT_SYNSETS if source == "digits" else FASHION_SYNSETS)
            mixed_ok += true in members and members <= own
    if DECOY in passes:
        spec, sp = DEMO_MODELS[DECOY], passes[DECOY]
        decoy = ""
        for c, true, planted in zip(pick(DECOY, sp), spec.synsets, spec.planted_synsets):
            members = {sp.leaves[j] for j in c.members} if c else set()
            decoy += "T" if true in members else "P" if planted in members else "-"
    return hits / total, open_world, stray, mixed_ok, decoy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    truth = build_demo_models()
    corpus = load_demo_corpus()
    base = Recipe.load(args.recipe)
    names = [*FASHION_MODELS, "digits", *(m for m in (MIXED, DECOY) if m in truth["models"])]
    passes = {m: functional_scores(TorchBlackBox.from_folder(model_dir(m)), corpus, base) for m in names}
    print("current recipe:", evaluate(passes, truth, corpus, base))
    open_sp, open_corpus = drop_leaf(passes["footwear"], corpus, GYM_SHOE)
    n_mixed = len(DEMO_MODELS[MIXED].classes)
    rows = []
    for cvalues in itertools.product(*CANDIDATE_GRID.values()):
        r0 = base.replace(**dict(zip(CANDIDATE_GRID, cvalues)))
        options = {m: options_of(passes[m], corpus, r0) for m in names}
        options["footwear-open"] = options_of(open_sp, open_corpus, r0)
        for values in itertools.product(*CHOICE_GRID.values()):
            knobs = {**dict(zip(CANDIDATE_GRID, cvalues)), **dict(zip(CHOICE_GRID, values))}
            frac, ow, stray, mixed, decoy = evaluate(passes, truth, corpus, base.replace(**knobs), options)
            rows.append((frac, ow in ("shoe", "footwear"), -stray, mixed, decoy, knobs))
    rows.sort(key=lambda x: (x[0], x[1], x[2], x[3] or 0), reverse=True)
    for frac, ow, stray, mixed, decoy, knobs in rows[: args.top]:
        print(f"{frac:.3f} open_world_ok={ow} digits_stray={-stray} mixed={mixed}/{n_mixed} decoy={decoy} {knobs}")
    print("\n| coherence | singleton candidates | anchoring | valid configurations | best (17 classes) | "
          "best with the mixed model as a hard constraint | decoy classes at that best (T true / P planted) |")
    print("|---|---|---|---|---|---|---|")
    for coh, single, anchor in itertools.product(CHOICE_GRID["coherence"], [False, True], [1, 99]):
        sel = [x for x in rows if x[5]["coherence"] == coh and x[5]["singleton_candidates"] == single
               and x[5]["coherence_anchor_classes"] == anchor and x[1] and x[2] == 0]
        with_mixed = [x for x in sel if x[3] == n_mixed]
        best = max((x[0] for x in sel), default=None)
        best_mixed = max(with_mixed, key=lambda x: x[0], default=None)
        fmt = lambda v: "-" if v is None else f"{round(v * 17)}/17"  # noqa: E731
        print(f"| {coh} | {single} | {'on' if anchor == 1 else 'off'} | {len(sel)} | {fmt(best)} | "
              f"{fmt(best_mixed[0] if best_mixed else None)} ({len(with_mixed)} configs) | "
              f"{best_mixed[4] if best_mixed else '-'} |")


if __name__ == "__main__":
    main()
