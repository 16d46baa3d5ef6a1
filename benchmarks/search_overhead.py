"""Search overhead: investigation wall time vs. the pure batched forward time of the same queries.

Prints, per demo model, the wall time of a search (expansion, preprocessing,
forward passes, clustering, no MLflow), the time of just the model's forward
passes on the same number of already-preprocessed inputs, and their ratio.
Searches and forwards alternate, repeat by repeat, so a machine whose speed
drifts (a shared 2-core VM) slows both alike; the ratio is the median of the
paired ratios. Then the adaptive pass's queries against the exhaustive pass's.

    python benchmarks/search_overhead.py [--model footwear digits] [--recipe demo] [--repeats 9]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from plugin.models.torch_blackbox import TorchBlackBox
from plugin.demo.corpus import load_demo_corpus
from plugin.demo.models import build_demo_models, model_dir
from plugin.core.recipe import Recipe
from plugin.core.search import search

SMALL_MODELS = ("footwear", "fashion10", "upper-body", "digits")  # the 32 px demo models (seconds each)


def forward_seconds(bb: TorchBlackBox, n: int, batch_size: int) -> float:
    """The model alone on ``n`` preprocessed inputs, in full batches."""
    h, w = bb.preprocessing.input_size[1:]
    x = torch.randn(batch_size, 3, h, w, device=bb.device)
    model = bb._model  # the benchmark may look inside; the search never does
    with torch.inference_mode():
        t0 = time.perf_counter()
        for start in range(0, n, batch_size):
            model(x[: min(batch_size, n - start)])
        return time.perf_counter() - t0


def measure(name: str, corpus, recipe: Recipe, repeats: int) -> None:
    bb = TorchBlackBox.from_folder(model_dir(name), batch_size=recipe.batch_size)
    res = search(bb, corpus, recipe)  # warm-up
    n = res.findings.queries
    forward_seconds(bb, n, recipe.batch_size)
    pairs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = search(bb, corpus, recipe)
        wall = time.perf_counter() - t0
        pairs.append((wall, forward_seconds(bb, n, recipe.batch_size)))
    wall, forward = min(w for w, _ in pairs), min(f for _, f in pairs)
    ratio = statistics.median(w / f for w, f in pairs)
    ex = search(bb, corpus, recipe.replace(score_pass="exhaustive"))
    same = sum({n.synset for n in a.leaves} == {n.synset for n in b.leaves}
               for a, b in zip(res.findings.classes, ex.findings.classes))
    print(f"{name:<22} {n:>7,} {ex.findings.queries / max(n, 1):>6.2f}x {same:>3}/{len(ex.findings.classes):<3} "
          f"{wall:>8.3f} {forward:>8.3f} {ratio:>6.2f}x  ({min(w / f for w, f in pairs):.2f}-{max(w / f for w, f in pairs):.2f})",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=list(SMALL_MODELS),
                    help="demo models (default: the 32 px ones; tf_efficientnet_lite0 takes about 20 min)")
    ap.add_argument("--recipe", default="demo", help="recipe name or YAML (default: demo)")
    ap.add_argument("--repeats", type=int, default=9, help="paired search/forward timings per model (default: 9)")
    args = ap.parse_args()
    build_demo_models()
    corpus = load_demo_corpus()
    recipe = Recipe.load(args.recipe)
    print(f"recipe={args.recipe} pass={recipe.score_pass} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'model':<22} {'queries':>7} {'fewer':>7} {'same':>7} {'wall s':>8} {'fwd s':>8} {'ratio':>7}  (range)")
    for name in args.model:
        measure(name, corpus, recipe, args.repeats)


if __name__ == "__main__":
    main()
