"""Clone validation (paper §5.4; METHOD.md "Clone validation"; Knockoff Nets).

How good is a found domain? Train a *clone* (a student) on the found samples,
labelled by the black box with hard labels only, and measure the clone's
per-class accuracy on held-out **true** data with **true** labels. Two
baselines of the same size and recipe bracket it:

* **found** (transfer set A): every class's filtered found samples
  (``result.classes[i].samples``, the untransformed corpus images). Their hard
  labels are already known from the search pass: with
  ``recipe.include_original`` copy 0 *is* the untransformed image, so its label
  ``scores.labels[j][k, 0]`` is reused and A costs **no queries**. Only when the
  recipe sent no originals are A's images re-queried (and counted). A class
  with no samples contributes nothing to A, so its found-clone accuracy is
  honestly low.
* **random** (baseline B): a random corpus sample of the same size, seeded
  with ``recipe.seed`` and labelled by the black box (these queries count).
  By default a leaf is drawn uniformly first, then an image of it (option
  ``random_sampling: leaf``), as a class-balanced corpus like ImageNet gives;
  ``image`` draws uniformly over all images.
* **true** (baseline C): true-distribution images of the same size, labelled
  by the *black box* (queried, counted), the paper's "same distribution" clone.
* **generated** (transfer set G, Method 1, the MM'24 talk's own evaluation): when
  a generative check ran before this one (listed together, it always does) and
  kept embeddings for some classes, ``n`` samples of those domains drawn through
  the same generator on its recorded seeds (then fresh ones), spread evenly over
  the classes, labelled by the black box (queried, counted). Run the generative
  check with ``classes: all`` for the talk's comparison; otherwise G covers the
  classes the corpus left unsettled only. Without generative findings the column
  is left out and ``generated.skipped`` says why.

Where true data comes from (option ``heldout``):

* ``"demo:<model>"``: the demo's registered :class:`HeldoutProvider` (``plugin.demo.models``), that demo
  model; C is drawn from its training split, evaluation uses its held-out split.
  With ``auto_demo`` (default true) a ``ctx.model_id`` naming a demo model
  selects this automatically.
* a folder whose class folders are named by the model's class index
  (``0/``, ``1/``, ...): each class's sorted files are split alternately into a
  transfer half (even positions) and an evaluation half (odd positions).

Without either the check is not applicable. The table has the paper's Table 5
layout: rows = classes + Average, columns = true-data, found-domain and
random-corpus clones.

Options: ``heldout``, ``auto_demo`` (true), ``max_transfer`` (2000: caps the
transfer size, a seeded subset of A), ``max_eval`` (5000 evaluation images),
``student_arch`` ("test_resnet"), ``student_input_size`` (32),
``student_pretrained_cfg`` (default: :data:`STUDENT_PRETRAINED_CFG` at that size),
``epochs`` (15), ``min_steps`` (200: small sets get more epochs), ``batch_size``
(64), ``lr`` (3e-3), ``shift`` (3 pixels of random roll), ``random_sampling``
("leaf" or "image").
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from typing import Protocol
from pathlib import Path

import numpy as np

from plugin.checks.base import CheckContext, CheckResult, register_check
from plugin.checks.generative import NAME as GENERATIVE, generated_domains
from plugin.core.errors import ConfigError
from plugin.core.registry import Registry
from plugin.corpora.imagenet import decode_image, list_images
from plugin.models.torch_blackbox import Preprocessing
from plugin.models.training import fit

NAME = "clone"
COLUMNS = ("true", "found", "random")  # the paper's Table 5 column order; "generated" follows when there is one
COLUMN_TITLES = {"true": "true-data clone", "found": "found-domain clone", "random": "random-corpus clone",
                 "generated": "generated-domain clone"}
DEFAULTS = {"auto_demo": True, "max_transfer": 2000, "max_eval": 5000, "student_arch": "test_resnet",
            "student_input_size": 32, "student_pretrained_cfg": None, "epochs": 15, "min_steps": 200,
            "batch_size": 64, "lr": 3e-3, "shift": 3, "random_sampling": "leaf"}
# A small student's eval transform: squash to the input size, normalise to [-1, 1].
STUDENT_PRETRAINED_CFG = {"input_size": [3, 32, 32], "interpolation": "bilinear", "crop_pct": 1.0,
                          "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 0}


@dataclass
class TrueData:
    """True-distribution images: a pool for transfer set C and an evaluation split."""

    source: str
    pool_x: list  # HxW(x3) uint8 images
    eval_x: list
    eval_y: np.ndarray  # true labels in the model's label space


def _not_applicable(reason: str, **summary) -> CheckResult:
    return CheckResult(NAME, False, {"reason": reason, **summary}, reason=reason)


def _folder_true_data(path: Path, num_classes: int) -> TrueData | str:
    if not path.is_dir():
        return f"heldout folder not found: {path}"
    dirs = sorted(p for p in path.iterdir() if p.is_dir())
    bad = [p.name for p in dirs if not p.name.isdigit() or int(p.name) >= num_classes]
    if bad:
        return (f"heldout folder {path}: class folders must be model class indices 0..{num_classes - 1}, "
                f"got {bad[:5]}")
    pool_x, eval_x, eval_y = [], [], []
    for d in sorted(dirs, key=lambda p: int(p.name)):
        for pos, f in enumerate(list_images(d)):
            img = decode_image(f, max_side=512)
            if pos % 2 == 0:
                pool_x.append(img)
            else:
                eval_x.append(img)
                eval_y.append(int(d.name))
    if not pool_x or not eval_x:
        return f"heldout folder {path} needs at least two images in some class folder (one to train, one to test)"
    return TrueData(str(path), pool_x, eval_x, np.asarray(eval_y, dtype=np.int64))


class HeldoutProvider(Protocol):
    """True data that a known family of models was trained on (registered as ``NAME:`` in ``heldout``)."""

    def load(self, arg: str, num_classes: int) -> TrueData | str:
        """The true data for ``NAME:arg``, or the reason there is none."""

    def auto(self, model_id: str) -> str | None:
        """The ``arg`` this provider knows for ``model_id``, if any (option ``auto_demo``)."""


# The demo registers "demo" here through the domain_finder.heldout entry points.
HELDOUT: Registry[HeldoutProvider] = Registry("heldout provider", group="domain_finder.heldout")


def resolve_true_data(ctx: CheckContext, num_classes: int) -> TrueData | str:
    """The true data named by the options, or the reason there is none."""
    heldout = ctx.options.get("heldout")
    if not heldout and ctx.options.get("auto_demo", DEFAULTS["auto_demo"]):
        for name in HELDOUT.names():
            arg = HELDOUT.get(name).auto(ctx.model_id)
            if arg is not None:
                heldout = f"{name}:{arg}"
                break
    if not heldout:
        return ("no true-distribution data: set check option heldout to 'demo:<model>' or to a folder of "
                "class-index subfolders (0/, 1/, ...)")
    heldout = str(heldout)
    prefix, sep, arg = heldout.partition(":")
    if sep and prefix in HELDOUT:
        return HELDOUT.get(prefix).load(arg, num_classes)
    return _folder_true_data(Path(heldout).expanduser(), num_classes)


def found_transfer_set(ctx: CheckContext, rng: np.random.Generator, max_transfer: int):
    """Transfer set A: (images, black-box labels, queries spent, pairs)."""
    # A found sample is an image whose original came back as its class (step 4 on real images: the score
    # pass's originals or the filtering's own queries), so with include_original its label is known already.
    owner = {}
    for cs in ctx.result.classes:
        for j, k in cs.samples:
            owner.setdefault((int(j), int(k)), cs.finding.index)  # one image is one training example
    pairs = list(owner)
    if len(pairs) > max_transfer:
        keep = np.sort(rng.choice(len(pairs), size=max_transfer, replace=False))
        pairs = [pairs[i] for i in keep]
    images = [ctx.corpus.leaves[j].images[k] for j, k in pairs]
    if ctx.recipe.include_original:
        return images, np.array([owner[p] for p in pairs], dtype=np.int64), 0, pairs
    labels = np.asarray(ctx.blackbox.predict(images), dtype=np.int64) if images else np.zeros(0, np.int64)
    return images, labels, len(images), pairs


def random_pairs(corpus, n: int, rng: np.random.Generator, mode: str = "leaf") -> list[tuple[int, int]]:
    """``n`` distinct (leaf, image) pairs: leaf-uniform then image-uniform, or image-uniform."""
    sizes = np.array([len(l) for l in corpus.leaves])
    total = int(sizes.sum())
    if n >= total:
        return [(j, k) for j, s in enumerate(sizes) for k in range(s)]
    if mode == "image":
        flat = np.sort(rng.choice(total, size=n, replace=False))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        leaf = np.searchsorted(starts, flat, side="right") - 1
        return [(int(j), int(f - starts[j])) for j, f in zip(leaf, flat)]
    if mode != "leaf":
        raise ConfigError(f"clone: random_sampling must be 'leaf' or 'image', got {mode!r}")
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < n:
        leaves = rng.integers(0, len(sizes), size=2 * (n - len(chosen)) + 8)
        for j in leaves:
            if len(chosen) >= n:
                break
            chosen.setdefault((int(j), int(rng.integers(0, sizes[j]))), None)
    return list(chosen)


def train_student(images, labels: np.ndarray, num_classes: int, pre, opts: dict, seed: int):
    """Trains one student (same recipe for every transfer set); returns the model."""
    import timm
    import torch

    with torch.random.fork_rng():  # seeded, without disturbing the caller's RNG
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = timm.create_model(opts["student_arch"], pretrained=False, num_classes=num_classes)
        if len(images) == 0:
            return model.eval()
        X = torch.cat([pre(images[i : i + 512]) for i in range(0, len(images), 512)])
        Y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        bs = int(opts["batch_size"])
        per_epoch = math.ceil(len(X) / bs)
        epochs = max(int(opts["epochs"]), math.ceil(int(opts["min_steps"]) / per_epoch))
        return fit(model, X, Y, epochs=epochs, batch_size=bs, lr=float(opts["lr"]), shift=int(opts["shift"]), rng=rng)


def per_class_accuracy(model, pre, images, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy of ``model`` on each true class (NaN for a class with no test images)."""
    import torch

    with torch.inference_mode():
        pred = np.concatenate([model(pre(images[i : i + 512])).argmax(1).numpy() for i in range(0, len(images), 512)])
    acc = np.full(num_classes, np.nan)
    for c in range(num_classes):
        m = labels == c
        if m.any():
            acc[c] = float((pred[m] == c).mean())
    return acc


def _label_names(info, num_classes: int) -> list[str]:
    names = list(getattr(info, "label_names", None) or [])
    return [str(names[i]) if i < len(names) and names[i] else str(i) for i in range(num_classes)]


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def write_tables(out: Path, table: list[dict], average: dict, columns=COLUMNS) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "clone_table.csv", out / "clone_table.md"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "label", *columns])
        for row in table:
            w.writerow([row["class"], row["label"], *("" if row[c] is None else f"{row[c]:.4f}" for c in columns)])
        w.writerow(["", "Average", *("" if average[c] is None else f"{average[c]:.4f}" for c in columns)])
    lines = ["| class | " + " | ".join(COLUMN_TITLES[c] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in table:
        name = row["label"] if row["label"] == str(row["class"]) else f"{row['class']}: {row['label']}"
        lines.append(f"| {name} | " + " | ".join(_pct(row[c]) for c in columns) + " |")
    lines.append("| **Average** | " + " | ".join(f"**{_pct(average[c])}**" for c in columns) + " |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


@register_check(NAME, after=(GENERATIVE,))
def clone_check(ctx: CheckContext) -> CheckResult:
    """Knockoff-style clone validation of the found domain (see the module docstring).

    Extra queries: B's ``n`` images and C's ``n`` images (plus A's ``n`` when
    the recipe sent no untransformed originals, and G's ``n`` when there are
    generative findings); reported as ``queries``.
    """
    t0 = time.time()
    opts = {**DEFAULTS, **{k: v for k, v in (ctx.options or {}).items() if v is not None}}
    unknown = sorted(set(ctx.options or {}) - set(DEFAULTS) - {"heldout"})
    if unknown:
        raise ConfigError(f"clone: unknown options {unknown}; valid: {sorted([*DEFAULTS, 'heldout'])}")
    bb, recipe = ctx.blackbox, ctx.recipe
    num_classes = int(getattr(ctx.info, "num_classes", None) or bb.num_classes or ctx.result.scores.counts.shape[0])

    true = resolve_true_data(ctx, num_classes)
    if isinstance(true, str):
        return _not_applicable(true)
    rng = np.random.default_rng([recipe.seed, 0xC10E])
    max_transfer = int(opts["max_transfer"])
    n_found_pairs = len({(j, k) for cs in ctx.result.classes for j, k in cs.samples})
    if n_found_pairs == 0:
        return _not_applicable("the search found no samples for any class, so there is no found transfer set")
    n = min(n_found_pairs, max_transfer)
    generated = generated_domains(ctx.earlier)
    has_g = not isinstance(generated, str)
    needed = n * (2 + int(not recipe.include_original) + int(has_g))
    budget = getattr(bb, "budget", None)
    if budget is not None and bb.num_queries + needed > budget:
        return _not_applicable(f"needs {needed} more queries but only {budget - bb.num_queries} are left in the budget")

    start_queries = bb.num_queries
    a_x, a_y, _, _ = found_transfer_set(ctx, rng, max_transfer)
    b_pairs = random_pairs(ctx.corpus, n, rng, str(opts["random_sampling"]))
    b_x = [ctx.corpus.leaves[j].images[k] for j, k in b_pairs]
    b_y = np.asarray(bb.predict(b_x), dtype=np.int64)
    c_idx = np.sort(rng.choice(len(true.pool_x), size=min(n, len(true.pool_x)), replace=False))
    c_x = [true.pool_x[i] for i in c_idx]
    c_y = np.asarray(bb.predict(c_x), dtype=np.int64)
    sets = {"found": (a_x, a_y), "random": (b_x, b_y), "true": (c_x, c_y)}
    g_record = {"skipped": generated} if not has_g else {}
    if has_g:
        t = time.time()
        g_x, g_record["classes"] = generated.transfer_set(n, ctx.shared)
        g_record["sample_seconds"] = round(time.time() - t, 2)
        sets["generated"] = (g_x, np.asarray(bb.predict(g_x), dtype=np.int64))
    queries = bb.num_queries - start_queries
    columns = COLUMNS + (("generated",) if has_g else ())

    eval_idx = np.arange(len(true.eval_x))
    if len(eval_idx) > int(opts["max_eval"]):
        eval_idx = np.sort(rng.choice(len(eval_idx), size=int(opts["max_eval"]), replace=False))
    e_x, e_y = [true.eval_x[i] for i in eval_idx], true.eval_y[eval_idx]

    size = int(opts["student_input_size"])
    pcfg = dict(opts["student_pretrained_cfg"] or STUDENT_PRETRAINED_CFG)
    pcfg["input_size"] = [3, size, size]
    pre = Preprocessing.from_pretrained_cfg(pcfg)
    acc, seconds, label_hist = {}, {}, {}
    for name, (x, y) in sets.items():
        t = time.time()
        student = train_student(x, y, num_classes, pre, opts, seed=recipe.seed)
        acc[name] = per_class_accuracy(student, pre, e_x, e_y, num_classes)
        seconds[name] = round(time.time() - t, 2)
        label_hist[name] = np.bincount(y, minlength=num_classes).astype(int).tolist() if len(y) else [0] * num_classes

    names = _label_names(ctx.info, num_classes)
    table = [{"class": i, "label": names[i],
              **{c: (None if np.isnan(acc[c][i]) else round(float(acc[c][i]), 4)) for c in columns}}
             for i in range(num_classes)]
    average = {c: (None if np.all(np.isnan(acc[c])) else round(float(np.nanmean(acc[c])), 4)) for c in columns}
    paths = write_tables(Path(ctx.out_dir) / NAME, table, average, columns)
    found_beats = average["found"] is not None and average["random"] is not None and average["found"] > average["random"]
    summary = {
        "transfer_size": n,
        "transfer_sizes": {name: len(x) for name, (x, _) in sets.items()},  # true may be smaller (small pool)
        "queries": int(queries),
        "found_labels_reused": bool(recipe.include_original),
        "true_data": true.source,
        "eval_size": len(e_y),
        "table": table,
        "average": average,
        "transfer_label_counts": label_hist,  # black-box labels per class in each transfer set
        "train_seconds": seconds,
        "student": {"arch": opts["student_arch"], "input_size": size, "epochs": int(opts["epochs"]),
                    "min_steps": int(opts["min_steps"]), "random_sampling": opts["random_sampling"]},
        "generated": g_record,  # what G drew (classes, seeds) or why there is no G
        "verdict": (f"clone accuracy: found {_pct(average['found'])}, random {_pct(average['random'])}, "
                    f"true {_pct(average['true'])}" + (f", generated {_pct(average['generated'])}" if has_g else "")
                    + ("" if found_beats else " (found does not beat random)")),
        "seconds": round(time.time() - t0, 2),
    }
    metrics = {f"clone.{c}_acc": float(average[c]) for c in columns if average[c] is not None}
    metrics["clone.queries"] = float(queries)
    return CheckResult(NAME, True, summary, metrics, paths)
