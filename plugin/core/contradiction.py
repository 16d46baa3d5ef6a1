"""``index-contradiction``: the ``dataset_index`` check names a dataset order that the search does not bear out.

Pure, no I/O. The check pairs each model class with a dataset class from the
hard labels the model gave that dataset's labelled leaves; the search, on its
own, chose leaves for each class. Where a pair's dataset class is not among
the leaves the search chose or ranked first for that class, the two disagree.
An ``index-aligned`` verdict whose found leaves mostly sit elsewhere
(``aligned_fraction`` below one half) disagrees as well. Either way the
investigator is told, with both answers side by side.
"""
from __future__ import annotations

from typing import Sequence

from plugin.core.findings import ClassFinding, Flag

INDEX = "index-contradiction"
TOP = 3  # a pair agrees when its dataset class is a chosen leaf or among the class's best-scored leaves
NO_ORDER = "no known dataset order"


def index_contradiction_flag(summary: dict, classes: Sequence[ClassFinding]) -> Flag | None:
    """The flag, if the ``dataset_index`` summary's verdict and ``classes`` (the search's) disagree.

    Args:
        summary: the check's summary (``verdict``, ``dataset``, ``orders`` with
            each order's ``mapping``, ``identity``, ``aligned_fraction``).
        classes: the search's per-class findings.
    """
    verdict = str((summary or {}).get("verdict") or "")
    dataset = summary.get("dataset") if summary else None
    found = sorted(c.index for c in classes if c.found)
    if not dataset or verdict == NO_ORDER or not found:  # a search that found nothing contradicts nothing
        return None
    order = next((o for o in summary.get("orders", []) if o.get("dataset") == dataset), None)
    if order is None:
        return None
    by_index = {c.index: c for c in classes}
    disagree = []
    compared = 0
    for pair in order.get("mapping", []):
        c = by_index.get(int(pair["model_class"]))
        if c is None or not c.found:
            continue
        compared += 1
        near = {n.synset for n in c.leaves} | {t.synset for t in c.top_leaves[:TOP]}
        if pair["dataset_synset"] not in near:
            disagree.append({"class": c.index, "index_says": pair["dataset_synset"],
                             "search_says": [n.name for n in c.leaves]})
    aligned = order.get("aligned_fraction")
    misaligned = bool(order.get("identity")) and aligned is not None and aligned < 0.5
    if not misaligned and (not compared or 2 * len(disagree) <= compared):
        return None
    parts = [f"dataset_index says '{verdict}'"]
    if disagree:
        parts.append(f"but the search chose other leaves for {len(disagree)} of the {compared} paired classes ("
                     + ", ".join(f"class {d['class']}: index {d['index_says']}, search {'/'.join(d['search_says'])}"
                                 for d in disagree[:5]) + ")")
    if misaligned:
        parts.append(f"and only {aligned:.0%} of the testable classes found leaves at their index")
    evidence = {"verdict": verdict, "dataset": dataset, "compared": compared, "disagree": disagree,
                "aligned_fraction": aligned, "accuracy_as_dataset": order.get("accuracy_as_dataset"),
                "sentence": " ".join(parts) + "."}
    classes_out = sorted({d["class"] for d in disagree}) or found
    return Flag(INDEX, tuple(classes_out), evidence)
