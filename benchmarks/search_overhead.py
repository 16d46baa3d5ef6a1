"""Search overhead: investigation wall time vs. the pure batched forward time of the same queries.

Prints, for one demo model, the wall time of a full investigation (expansion,
preprocessing, forward passes, clustering, no MLflow), the time of just the
model's forward passes on the same number of already-preprocessed inputs,
measured in the same run, and their ratio.

    python benchmarks/search_overhead.py [--model footwear] [--recipe demo]
"""
from __future__ import annotations

import argparse
import time

import torch

from plugin.models.torch_blackbox import TorchBlackBox
from plugin.demo.corpus import load_demo_corpus
from plugin.demo.models import build_demo_models, model_dir
from plugin.core.recipe import Recipe
from plugin.core.search import search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="footwear")
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    build_demo_models()
    corpus = load_demo_corpus()
    recipe = Recipe.load(args.recipe)
    bb = TorchBlackBox.from_folder(model_dir(args.model), batch_size=recipe.batch_size)
    search(bb, corpus, recipe)  # warm-up
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = search(bb, corpus, recipe)
        walls.append(time.perf_counter() - t0)
    n = res.findings.queries
    h, w = bb.preprocessing.input_size[1:]
    x = torch.randn(recipe.batch_size, 3, h, w, device=bb.device)
    model = bb._model  # the benchmark may look inside; the search never does
    fwd = []
    with torch.inference_mode():
        model(x)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for start in range(0, n, recipe.batch_size):
                model(x[: min(recipe.batch_size, n - start)])
            fwd.append(time.perf_counter() - t0)
    wall, forward = min(walls), min(fwd)
    print(f"model={args.model} recipe={args.recipe} device={bb.device} queries={n} threads={torch.get_num_threads()}")
    print(f"investigation wall time : {wall:8.3f} s  ({n / wall:8.0f} queries/s)")
    print(f"pure batched forward    : {forward:8.3f} s  ({n / forward:8.0f} queries/s)")
    print(f"ratio (wall / forward)  : {wall / forward:8.2f}x")
    # The adaptive pass (the default) against the exhaustive one, same model, same run.
    ex = search(bb, corpus, recipe.replace(score_pass="exhaustive"))
    same = sum({n.synset for n in a.leaves} == {n.synset for n in b.leaves}
               for a, b in zip(res.findings.classes, ex.findings.classes))
    print(f"queries {recipe.score_pass} / exhaustive : {n} / {ex.findings.queries} "
          f"({ex.findings.queries / max(n, 1):.2f}x fewer), same chosen leaves {same}/{len(ex.findings.classes)}")


if __name__ == "__main__":
    main()
