"""ImageNet-shaped workload: stage table, peak RSS, adaptive vs exhaustive queries, pipeline queries/s.

Our own ImageNet shape: the first N of timm's 1,000 ImageNet-1k synsets with
their WordNet tree, lazy synthetic images of mixed sizes up to 375x500 (never
all resident), and a cheap N-class black box whose labels follow the tree: an
image of leaf j gets class j with probability ``--accuracy``, else one of the
classes nearest leaf j in the tree. Everything is measured in the same run,
so the ratios hold on a loaded machine too.

    python benchmarks/imagenet_scale.py --leaves 100 300 1000
    python benchmarks/imagenet_scale.py --leaves 100 --quick     # the CI smoke size
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from plugin.core.blackbox import CountingBlackBox, InputSpec
from plugin.core.corpus import Corpus, LazyImages, Leaf
from plugin.core.hierarchy import Hierarchy
from plugin.core.recipe import Recipe

SIZES = [(375, 500), (500, 375), (333, 500), (375, 375), (281, 500), (240, 320), (500, 333)]
LEVEL = 8  # leaf id is coded in the red/green level of the image, 32 x 32 levels


def imagenet_synsets(n: int) -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    step = 1000 / n
    return [info.index_to_label_name(int(k * step)) for k in range(n)]  # spread over the whole tree


class SyntheticImages(LazyImages):
    """``count`` images of leaf ``j``, made on access (about 0.2 ms each), never stored.

    ``short_side`` gives them as the loader's resized cache would (``load_imagenet_folder(short_side=)``):
    the shorter side shrunk to it, never enlarged.
    """

    def __init__(self, j: int, count: int, short_side: int | None = None):
        super().__init__(count)
        self.j = j
        self.short_side = short_side

    def _load(self, k: int) -> np.ndarray:
        h, w = SIZES[(self.j * 7 + k) % len(SIZES)]
        if self.short_side and min(h, w) > self.short_side:
            scale = self.short_side / min(h, w)
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = LEVEL // 2 + LEVEL * (self.j // 32)
        img[..., 1] = LEVEL // 2 + LEVEL * (self.j % 32)
        img[..., 2] = (k * 37) % 256
        img[: h // 8, :, 2] = 255 - img[0, 0, 2]  # a stripe: not a flat field
        return img


def synthetic_corpus(n: int, images: int) -> Corpus:
    synsets = imagenet_synsets(n)
    h = Hierarchy.from_wordnet(synsets)
    return Corpus(f"imagenet-shaped-{n}", [Leaf(s, h.name(s), SyntheticImages(j, images), "synthetic")
                                           for j, s in enumerate(synsets)], h)


def _leaf_of(red, green) -> np.ndarray:
    return (np.clip(np.round((red - LEVEL // 2) / LEVEL), 0, 31) * 32 + np.clip(np.round((green - LEVEL // 2) / LEVEL), 0, 31)).astype(int)


class TreeBlackBox(CountingBlackBox):
    """A cheap C-class black box whose labels follow the WordNet tree.

    Class c belongs to leaf ``class_leaves[c]``. An image of leaf j is read
    back from its colour (a median, robust to the warps and noise); the label
    is j's nearest class with probability ``accuracy``, else one of its 5
    nearest classes. It takes both protocol paths, like a local model.
    """

    def __init__(self, corpus: Corpus, class_leaves: list[int], accuracy: float = 0.9, input_size: int = 32,
                 seed: int = 0):
        super().__init__(num_classes=len(class_leaves))
        leaves = corpus.synsets
        dist = corpus.hierarchy.distance_matrix(leaves, [leaves[c] for c in class_leaves])
        order = np.lexsort((np.tile(np.arange(len(class_leaves)), (len(leaves), 1)), dist), axis=1)
        self.nearest = order[:, :5]  # per leaf, its 5 nearest classes (the first is "right")
        self.accuracy = accuracy
        self.rng = np.random.default_rng(seed)
        self.input_spec = InputSpec((input_size, input_size), 0.875, "center", "bilinear", (0.5,) * 3, (0.5,) * 3)
        self.device = "cpu"
        from plugin.models.checkpoint import CheckpointInfo
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        names = tuple(info.label_name_to_description(leaves[c]).split(",")[0] for c in class_leaves)
        self.info = CheckpointInfo("synthetic", "tree-blackbox", len(class_leaves), names, {}, {}, "none", {})

    def _labels(self, leaf: np.ndarray) -> np.ndarray:
        leaf = np.clip(leaf, 0, len(self.nearest) - 1)
        right = self.rng.random(len(leaf)) < self.accuracy
        alt = self.nearest[leaf, self.rng.integers(1, self.nearest.shape[1], len(leaf))]
        return np.where(right, self.nearest[leaf, 0], alt)

    def _predict(self, images):
        return self._labels(np.array([_leaf_of(np.median(im[..., 0]), np.median(im[..., 1])) for im in images]))

    def _predict_tensor(self, batch):
        import torch

        x = batch.float().flatten(2)[:, :2]  # red, green of the normalised input
        med = torch.median(x, dim=2).values.numpy() * 127.5 + 127.5  # undo mean = std = 0.5
        return self._labels(_leaf_of(med[:, 0], med[:, 1]))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *a, **kw):
    gc.collect()  # a stage pays for its own garbage, not for a full collection the stages before it left due
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def chosen_leaf(finding) -> str | None:
    return finding.leaves[0].synset if finding.leaves else None


def agreement(a, b) -> float:
    same = sum(set(n.synset for n in x.leaves) == set(n.synset for n in y.leaves) for x, y in zip(a.classes, b.classes))
    return same / max(1, len(a.classes))


def stages(n: int, images: int, recipe: Recipe, accuracy: float, input_size: int, exhaustive: bool) -> dict:
    """One size: search stages, checks, artifacts, adaptive vs exhaustive, the 10-class model."""
    from plugin.artifacts import write_artifacts
    from plugin.checks import get_check
    from plugin.checks.base import CheckContext
    from plugin.core.clusters import choose_clusters, class_clusters, finalize_class, top_leaves
    from plugin.core.scores import effective_min_samples
    from plugin.core.search import score_pass, search, stability

    corpus = synthetic_corpus(n, images)
    row: dict = {"leaves": n}
    bb = TreeBlackBox(corpus, list(range(n)), accuracy, input_size)
    sp, row["score pass (adaptive)"] = timed(score_pass, bb, corpus, recipe)
    eff = recipe.replace(min_samples=effective_min_samples(sp, recipe))
    gc.collect()
    t0 = time.perf_counter()
    options = class_clusters(sp, corpus, eff)
    row["candidates + K-medoids"] = time.perf_counter() - t0
    chosen, row["choose + coherence"] = timed(choose_clusters, options, corpus, eff, sp.leaves)
    gc.collect()
    t0 = time.perf_counter()
    [finalize_class(i, c, top_leaves(i, sp, corpus, eff), sp, corpus, eff) for i, c in enumerate(chosen)]
    row["filtering"] = time.perf_counter() - t0
    gc.collect()
    _, row["stability (bootstrap of the final pass)"] = timed(stability, sp, corpus, recipe, {})
    bb = TreeBlackBox(corpus, list(range(n)), accuracy, input_size)
    res, row["search (total)"] = timed(search, bb, corpus, recipe, "tree")
    with tempfile.TemporaryDirectory() as tmp:
        for name in recipe.checks:
            ctx = CheckContext(bb, corpus, res, recipe, bb.info, dict(recipe.check_options.get(name, {})), Path(tmp), "tree")
            _, row[f"check {name}"] = timed(get_check(name), ctx)
        _, row["artifacts"] = timed(write_artifacts, res, corpus, Path(tmp) / "art", recipe.montage_samples)
    f = res.findings
    row["queries adaptive"] = f.queries
    row["queries exhaustive (planned)"] = f.exhaustive_queries
    row["classes found"] = sum(c.found for c in f.classes) / n
    row["true leaf chosen"] = sum(chosen_leaf(c) == corpus.synsets[c.index] for c in f.classes) / n
    row["true leaf in cluster"] = sum(corpus.synsets[c.index] in {x.synset for x in c.leaves} for c in f.classes) / n
    row["filter queries (step 4, in queries adaptive)"] = f.filter_queries
    row["mean stability"] = f.stability
    row["classes uncertain"] = f.uncertain / n
    if exhaustive:
        bb2 = TreeBlackBox(corpus, list(range(n)), accuracy, input_size)
        ex, row["search exhaustive"] = timed(search, bb2, corpus, recipe.replace(score_pass="exhaustive"), "tree")
        row["queries exhaustive"] = ex.findings.queries
        row["same chosen leaves"] = agreement(f, ex.findings)
        row["classes found (exhaustive)"] = sum(c.found for c in ex.findings.classes) / n
        row["pipeline queries/s (cheap box)"] = ex.findings.queries / ex.scores.seconds
    # A 10-class model on the same leaves: most leaves cannot matter to it.
    ten = list(np.linspace(0, n - 1, 10).astype(int))
    r10 = search(TreeBlackBox(corpus, ten, accuracy, input_size), corpus, recipe, "ten").findings
    row["10-class queries adaptive"] = r10.queries
    row["10-class classes found"] = sum(c.found for c in r10.classes) / 10
    row["10-class exhaustive / adaptive"] = r10.exhaustive_queries / max(1, r10.queries)
    row["peak RSS MB (so far)"] = peak_rss_mb()
    return row


def investigation(n: int, images: int, recipe: Recipe, accuracy: float, input_size: int) -> dict:
    """The full investigation (search, default checks, MLflow logging), run in this process."""
    import plugin.investigate as inv
    from plugin.tracking import ModelIdentity

    corpus = synthetic_corpus(n, images)
    bb = TreeBlackBox(corpus, list(range(n)), accuracy, input_size)
    inv.load_blackbox = lambda model, recipe: bb  # the benchmark may look inside; the product never does
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        t0 = time.perf_counter()
        res = inv.investigate("synthetic", corpus, recipe, identity=ModelIdentity(f"tree-{n}", "", {}, "local"),
                              progress=False)
        wall = time.perf_counter() - t0
    f = res.result.findings
    return {"wall": wall, "peak_rss_mb": peak_rss_mb(), "queries": f.queries, "found": f.found_fraction}


def pipeline_rate(seconds: float = 6.0) -> dict:
    """Expansion + preprocessing from 375x500 to tf_efficientnet_lite0's input, new path vs old."""
    import torch

    from plugin.core.transforms import expand_leaf, expand_to_input
    from plugin.models.torch_blackbox import Preprocessing

    cfg = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3}
    spec = InputSpec((224, 224), 0.875, "center", "bicubic", (0.5,) * 3, (0.5,) * 3)
    recipe = Recipe()
    leaf = SyntheticImages(3, 50)
    imgs = [leaf[k] for k in range(50)]
    out = {"threads": torch.get_num_threads()}
    expand_to_input([(imgs[:4], 0, 0)], recipe, spec)
    n, t0, k = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += len(expand_to_input([(imgs, k, 0)], recipe, spec))
        k += 1
    out["new q/s"] = n / (time.perf_counter() - t0)
    pre = Preprocessing.from_pretrained_cfg(cfg)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        copies = expand_leaf(imgs[:8], recipe, seed=n)
        pre(copies)
        n += len(copies)
    out["old q/s"] = n / (time.perf_counter() - t0)
    return out


def exponent(xs: list[int], ys: list[float]) -> str:
    if len(xs) < 2 or min(ys) <= 0:
        return ""
    return f"N^{math.log(ys[-1] / ys[0]) / math.log(xs[-1] / xs[0]):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leaves", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--images", type=int, default=50, help="images per leaf (ImageNet val has 50)")
    ap.add_argument("--accuracy", type=float, default=0.9)
    ap.add_argument("--input-size", type=int, default=32, help="the cheap box's input side")
    ap.add_argument("--recipe", default=None)
    ap.add_argument("--no-exhaustive", action="store_true", help="skip the exhaustive comparison")
    ap.add_argument("--no-investigation", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke size: stages only, no pipeline rate")
    ap.add_argument("--_investigate", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
    if args._investigate:
        print(json.dumps(investigation(args._investigate, args.images, recipe, args.accuracy, args.input_size)))
        return
    rows = [stages(n, args.images, recipe, args.accuracy, args.input_size, not args.no_exhaustive) for n in args.leaves]
    if not args.no_investigation:
        for n, row in zip(args.leaves, rows):
            # A fresh process per size, so its peak RSS is the investigation's own.
            cmd = [sys.executable, __file__, "--_investigate", str(n), "--images", str(args.images),
                   "--accuracy", str(args.accuracy), "--input-size", str(args.input_size)]
            if args.recipe:
                cmd += ["--recipe", args.recipe]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            inv = json.loads(out)
            row["full investigation (s)"] = inv["wall"]
            row["investigation peak RSS MB"] = inv["peak_rss_mb"]
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "leaves"))
    print(f"ImageNet-shaped: {args.images} images/leaf, accuracy {args.accuracy}, cheap box input "
          f"{args.input_size}px, recipe {args.recipe or 'default'} ({recipe.score_pass} pass)")
    print(f"| stage | " + " | ".join(str(r["leaves"]) for r in rows) + " | growth |")
    print("|---|" + "---|" * len(rows) + "---|")
    for k in keys:
        vals = [r.get(k) for r in rows]
        cells = [("" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)) for v in vals]
        grow = exponent(args.leaves, vals) if all(isinstance(v, float) for v in vals) and k[0].islower() and "queries" not in k and "classes" not in k and "same" not in k and "leaf" not in k and "/" not in k else ""
        print(f"| {k} | " + " | ".join(cells) + f" | {grow} |")
    for r in rows:
        if "queries exhaustive" in r:
            print(f"{r['leaves']} leaves: exhaustive/adaptive queries = {r['queries exhaustive'] / r['queries adaptive']:.2f}x, "
                  f"same chosen leaves {100 * r['same chosen leaves']:.1f}%")
    if not args.quick:
        p = pipeline_rate()
        print(f"expansion + preprocessing, 375x500 -> 224 (tf_efficientnet_lite0 input), {p['threads']} torch threads: "
              f"{p['new q/s']:.0f} queries/s batched pipeline vs {p['old q/s']:.0f} queries/s expand_leaf + "
              f"per-image preprocessing ({p['new q/s'] / p['old q/s']:.1f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
