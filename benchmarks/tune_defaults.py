"""Re-measures the search defaults on the demo ground truth (README "Choosing the defaults").

One score pass per demo model (the expensive, query-spending part), then every
configuration of a small grid of search knobs on the same passes. Prints the
best configurations: fraction of fashion-model classes whose true leaf is in the
chosen cluster, whether the open-world case (sneaker leaf removed) lands on
shoe/footwear, and how many digits classes stray off digit leaves.

    python benchmarks/tune_defaults.py [--recipe demo]
"""
from __future__ import annotations

import argparse
import itertools

from plugin.models.torch_blackbox import TorchBlackBox
from plugin.demo.corpus import load_demo_corpus
from plugin.demo.models import build_demo_models, model_dir
from plugin.core.recipe import Recipe
from plugin.core.clusters import candidate_clusters, choose_clusters
from plugin.core.scores import ScorePass, functional_scores

GYM_SHOE = "n03472535"
GRID = dict(alpha=[0.4, 0.6], threshold=[0.2, 0.3], merge_distance=[3.0, 4.0], coherence=[0.0, 0.25, 0.5, 1.0],
            singleton_semantic=[0.33, 0.5], top_k=[8, 16])


def drop_leaf(sp: ScorePass, corpus, synset: str):
    keep = [k for k, s in enumerate(sp.leaves) if s != synset]
    return (ScorePass([sp.leaves[k] for k in keep], sp.counts[:, keep], sp.totals[keep], sp.n_images[keep],
                      [sp.labels[k] for k in keep], sp.queries, 0.0), corpus.without([synset]))


def chosen(sp, corpus, recipe):
    options = [candidate_clusters(i, sp, corpus, recipe)[0] for i in range(sp.counts.shape[0])]
    return choose_clusters(options, corpus, recipe, sp.leaves)


def evaluate(passes, truth, corpus, recipe):
    hits = total = stray = 0
    for name, sp in passes.items():
        for i, c in enumerate(chosen(sp, corpus, recipe)):
            members = {sp.leaves[j] for j in c.members} if c else set()
            if name == "digits":
                stray += not (members and all(m in truth["models"]["digits"]["classes"] for m in members))
            else:
                total += 1
                hits += truth["models"][name]["classes"][i] in members
    sp2, c2 = drop_leaf(passes["footwear"], corpus, GYM_SHOE)
    sneaker = chosen(sp2, c2, recipe)[1]
    open_world = c2.hierarchy.name(sneaker.domain) if sneaker and sneaker.domain else None
    return hits / total, open_world, stray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    truth = build_demo_models()
    corpus = load_demo_corpus()
    base = Recipe.load(args.recipe)
    passes = {m: functional_scores(TorchBlackBox.from_folder(model_dir(m)), corpus, base)
              for m in ["fashion10", "footwear", "upper-body", "digits"]}
    print("current recipe:", evaluate(passes, truth, corpus, base))
    rows = []
    for values in itertools.product(*GRID.values()):
        r = base.replace(**dict(zip(GRID, values)))
        frac, ow, stray = evaluate(passes, truth, corpus, r)
        rows.append((frac, ow in ("shoe", "footwear"), -stray, dict(zip(GRID, values))))
    rows.sort(key=lambda x: (x[0], x[1], x[2]), reverse=True)
    for frac, ow, stray, knobs in rows[: args.top]:
        print(f"{frac:.3f} open_world_ok={ow} digits_stray={-stray} {knobs}")
    for coh in GRID["coherence"]:
        ok = [x[0] for x in rows if x[3]["coherence"] == coh and x[1] and x[2] == 0]
        print(f"coherence {coh}: best {max(ok) if ok else None} over {len(ok)} valid configurations")


if __name__ == "__main__":
    main()
