"""Auxiliary corpora (METHOD.md "Auxiliary checks"; the paper's beans model).

Scores any number of *flat* auxiliary corpora (Flavia, Oxford Flowers, any
ImageFolder, or a named one such as ``demo-fashion``) with the functional
score alone, the same one pass as step 1 of the search with the same recipe.
Per model class it reports the best auxiliary class and its score, per corpus
the mean of those per-class top scores (the paper: Flavia 0.83 with the best
"Cercis chinensis" at 0.90, Oxford Flowers 0.36), and draws the highest
scoring samples per class (the paper's Fig. 5). These are extra black-box
queries, so every corpus reports how many it spent.

Options:
    corpora: list of ``[LOADER:]LABEL=PATH`` specs or named corpora
        (:func:`plugin.aux_corpora.get_aux_corpus`).
    loaded: list of ready ``(label, Corpus)`` pairs (for callers and tests).
    max_per_leaf: images decoded per auxiliary class (default: the recipe's
        ``images_per_leaf``; the score pass never uses more).
    montage_samples: samples drawn per class and corpus (default 4).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from plugin.artifacts import montage
from plugin.checks.base import CheckContext, CheckResult, register_check
from plugin.core.scores import functional_scores, pass_queries
from plugin.corpora.aux import get_aux_corpus
from plugin.core.errors import ConfigError, DomainFinderError

NAME = "aux"
DEFAULT_MONTAGE_SAMPLES = 4


def _safe(label: str) -> str:
    """A label usable as a folder name and inside an MLflow metric key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or "corpus"


def _corpora(ctx: CheckContext) -> list[tuple[str, object]]:
    opts = ctx.options or {}
    specs = opts.get("corpora") or []
    if isinstance(specs, str):
        specs = [specs]
    out = [(str(label), corpus) for label, corpus in (opts.get("loaded") or [])]
    max_per_leaf = opts.get("max_per_leaf", ctx.recipe.images_per_leaf)
    for spec in specs:
        out.append(get_aux_corpus(str(spec), max_per_leaf=max_per_leaf))
    seen: set[str] = set()
    for label, _ in out:
        if _safe(label) in seen:
            raise ConfigError(f"aux check: two auxiliary corpora are labelled {label!r}; give each its own LABEL=")
        seen.add(_safe(label))
    return out


def image_scores(labels: list[np.ndarray], cls: int) -> list[tuple[float, int, int]]:
    """Per image, the fraction of its copies labelled ``cls``: ``(score, leaf, image)``,
    best first (ties: corpus order)."""
    rows = []
    for j, lab in enumerate(labels):
        if lab.size:
            for k, s in enumerate((lab == cls).mean(axis=1)):
                rows.append((float(s), j, k))
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    return rows


def score_corpus(ctx: CheckContext, label: str, corpus, out: Path, n_montage: int) -> tuple[dict, list[Path]]:
    """Scores one auxiliary corpus; returns its summary and the files written."""
    # Every aux image is scored: the montages rank single images, which an adaptive pass would skip.
    sp = functional_scores(ctx.blackbox, corpus, ctx.recipe.replace(score_pass="exhaustive"))
    scores = sp.scores
    num_classes = scores.shape[0]
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    classes = []
    for i in range(num_classes):
        j = int(np.argmax(scores[i])) if scores.shape[1] else -1
        top = float(scores[i, j]) if j >= 0 else 0.0
        leaf = corpus.leaves[j] if j >= 0 else None
        ranked = [r for r in image_scores(sp.labels, i) if r[0] > 0][:n_montage]
        entry = {"index": i, "top_class": leaf.name if leaf else None, "top_leaf": leaf.synset if leaf else None,
                 "top_score": round(top, 4), "top_samples": [
                     {"leaf": corpus.leaves[jj].synset, "image": kk, "score": round(s, 4)} for s, jj, kk in ranked]}
        if ranked:
            imgs = [corpus.leaves[jj].images[kk] for _, jj, kk in ranked]
            paths.append(montage(imgs, out / f"class_{i:04d}.png", cols=len(imgs)))
            entry["montage"] = paths[-1].name
        classes.append(entry)
    csv_path = out / "aux_scores.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "aux_leaf", "aux_name", "score", "hits", "copies", "images", "is_top"])
        for i in range(num_classes):
            for j, leaf in enumerate(corpus.leaves):
                w.writerow([i, leaf.synset, leaf.name, f"{scores[i, j]:.4f}", int(sp.counts[i, j]), int(sp.totals[j]),
                            int(sp.n_images[j]), classes[i]["top_leaf"] == leaf.synset])
    paths.append(csv_path)
    tops = [c["top_score"] for c in classes]
    summary = {"corpus": corpus.name, "aux_classes": len(corpus.leaves),
               "mean_top_score": round(float(np.mean(tops)), 4) if tops else None,
               "queries": int(sp.queries), "seconds": round(sp.seconds, 2), "classes": classes}
    return summary, paths


def load_corpora(options: dict, recipe) -> dict | None:
    """The ``validate`` hook: loads the ``corpora`` specs once, before the first query (a bad folder is a
    one-line ConfigError naming it), and returns the options with them turned into ``loaded`` corpora."""
    if not options.get("corpora"):
        return None
    opts = dict(options)
    specs = opts.pop("corpora")
    specs = [specs] if isinstance(specs, str) else list(specs)
    loaded = list(opts.get("loaded") or [])
    for spec in specs:
        try:
            loaded.append(get_aux_corpus(str(spec), max_per_leaf=opts.get("max_per_leaf", recipe.images_per_leaf)))
        except DomainFinderError as e:
            raise ConfigError(f"--aux {spec}: {e}") from e
        except (OSError, ValueError) as e:
            raise ConfigError(f"--aux {spec}: cannot load it ({type(e).__name__}: {e})") from e
    opts["loaded"] = loaded
    return opts


def reserve(options: dict, recipe) -> int:
    """The ``reserve`` hook: one score pass over each loaded auxiliary corpus."""
    return sum(pass_queries(corpus, recipe) for _, corpus in options.get("loaded") or [])


@register_check(NAME, validate=load_corpora, reserve=reserve)
def aux_check(ctx: CheckContext) -> CheckResult:
    opts = ctx.options or {}
    if not opts.get("corpora") and not opts.get("loaded"):
        return CheckResult(NAME, False, {"applicable": False, "reason": "no auxiliary corpora given"},
                           reason="no auxiliary corpora given (check option corpora: [\"[LOADER:]LABEL=PATH\", ...])")
    n_montage = int(opts.get("montage_samples", DEFAULT_MONTAGE_SAMPLES))
    summary: dict = {}
    metrics: dict[str, float] = {}
    artifacts: list[Path] = []
    for label, corpus in _corpora(ctx):
        key = _safe(label)
        s, paths = score_corpus(ctx, label, corpus, Path(ctx.out_dir) / NAME / key, n_montage)
        summary[label] = s
        artifacts += paths
        if s["mean_top_score"] is not None:
            metrics[f"aux.{key}.mean_top_score"] = s["mean_top_score"]
        metrics[f"aux.{key}.queries"] = float(s["queries"])
    metrics["aux.queries"] = float(sum(s["queries"] for s in summary.values()))
    return CheckResult(NAME, True, summary, metrics, tuple(artifacts))
