"""Dataset-index matching: do the model's class indices follow a known label order?

Known orders come from the corpus (``Corpus.label_orders``: the demo's
Fashion-MNIST and digits) and from timm's ImageNet subsets for models whose
class count timm recognises (1000; 1001 with ``label_offset`` 1; 11221,
11821, 21841...). No extra queries: the evidence is the search pass itself.

Evidence per order:
  * **labelled accuracy**: the corpus leaves whose synset is in the order
    carry that dataset's labels, so the model can be scored as a classifier
    of the dataset on their (untransformed) images;
  * **best mapping**: a Hungarian assignment of model classes to dataset
    classes on a mutual score (how much of leaf d goes to class i, times how
    much of class i's responses come from leaf d). The mutual part matters: a
    3-class model sends *every* digit to its catch-all class, which must not
    read as a digits classifier;
  * **found-leaf alignment**: of the classes whose dataset synset the corpus
    can test (it has a leaf equal to, above or below it), the fraction whose
    chosen leaves are hierarchy-consistent with that synset (paper §5.5: 991
    of 1000 MobileNet classes converged to their own ImageNet leaf).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plugin.checks.base import CheckContext, CheckResult, register_check
from plugin.core.hierarchy import wordnet_related
from plugin.core.scores import image_labels

MIN_STRENGTH = 0.5  # mean mutual score of the mapping needed to claim an order
MIN_PAIRS = 2


@dataclass(frozen=True)
class LabelOrder:
    dataset: str
    synsets: tuple[str, ...]
    offset: int = 0  # model class = dataset index + offset (1 for background-first 1001-class models)


def known_orders(corpus, num_classes: int, pretrained_cfg: dict | None = None) -> list[LabelOrder]:
    """The label orders this model could follow."""
    orders = [LabelOrder(name, tuple(s)) for name, s in (corpus.label_orders or {}).items()]
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset, offset = infer_imagenet_subset({"num_classes": num_classes}), 0
    if not subset and num_classes > 1:
        # A background class first (1001 = 1 + 1000, TF-slim style): timm's label_offset.
        subset, offset = infer_imagenet_subset({"num_classes": num_classes - 1}), 1
    if subset:
        info = ImageNetInfo(subset)
        n = info.num_classes()
        offset = int((pretrained_cfg or {}).get("label_offset", offset))
        orders.append(LabelOrder(subset.replace("imagenet", "ImageNet"),
                                 tuple(info.index_to_label_name(i) for i in range(n)), offset))
    return orders


def evaluate_order(order: LabelOrder, ctx: CheckContext) -> dict:
    """All the evidence for one order (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    sp = ctx.result.scores
    n_cls = sp.counts.shape[0]
    index_of = {s: d for d, s in enumerate(order.synsets)}
    labelled = [(j, index_of[s]) for j, s in enumerate(sp.leaves) if s in index_of]
    out: dict = {"dataset": order.dataset, "offset": order.offset, "classes_in_order": len(order.synsets),
                 "labelled_leaves": len(labelled)}
    # Labelled accuracy under the identity alignment.
    correct = total = 0
    conf = np.zeros((n_cls, len(labelled)))
    for col, (j, d) in enumerate(labelled):
        preds = image_labels(sp.labels[j], ctx.recipe)
        correct += int((preds == d + order.offset).sum())
        total += len(preds)
        conf[:, col] = np.bincount(preds, minlength=n_cls)[:n_cls] / max(len(preds), 1)
    out["labelled_images"] = total
    out["accuracy_as_dataset"] = correct / total if total else None
    # Best mapping on the mutual score.
    mapping: dict[int, int] = {}
    strength = 0.0
    if labelled:
        share = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1e-12)  # of class i's responses, from leaf d
        mutual = np.where(conf + share > 0, 2 * conf * share / np.maximum(conf + share, 1e-12), 0.0)
        rows, cols = linear_sum_assignment(-mutual)
        chosen = {int(i): int(c) for i, c in zip(rows, cols) if conf[i, c] > 0}
        chosen = _break_ties(chosen, mutual, labelled, sp.leaves, ctx.corpus.hierarchy)
        pairs = [(i, labelled[c][1], float(mutual[i, c]), float(conf[i, c])) for i, c in sorted(chosen.items())]
        mapping = {i: d for i, d, _, _ in pairs}
        strength = float(np.mean([m for _, _, m, _ in pairs])) if pairs else 0.0
        out["mapping"] = [{"model_class": i, "dataset_index": d, "dataset_synset": order.synsets[d],
                           "mutual": round(m, 4), "rate": round(r, 4)} for i, d, m, r in pairs]
    out["mapping_strength"] = strength
    shifts = {i - d for i, d in mapping.items()}
    exact = sum(i - d == order.offset for i, d in mapping.items())
    # How likely that many exact index matches are if the m matched classes
    # were paired at random among the order's n classes: Binomial(m, 1/n).
    # Two exact matches among six pairs of a 1000-class order is far beyond
    # chance (the other pairs are then errors, not a permutation).
    from scipy.stats import binom

    out["exact_index_matches"] = exact
    out["identity_p_value"] = float(binom.sf(exact - 1, len(mapping), 1 / len(order.synsets))) if exact else 1.0
    out["identity"] = bool(mapping) and exact >= min(MIN_PAIRS, len(mapping)) and out["identity_p_value"] < 0.01
    out["constant_offset"] = next(iter(shifts)) if len(shifts) == 1 else None
    # Found-leaf alignment on testable classes.
    testable = aligned = 0
    aligned_classes = []
    near = _Relatedness(sp.leaves)
    for c in ctx.result.findings.classes:
        d = c.index - order.offset
        if not 0 <= d < len(order.synsets):
            continue
        target = order.synsets[d]
        if not near.any_leaf(target):
            continue
        testable += 1
        if any(_related(target, n.synset) for n in c.leaves):
            aligned += 1
            aligned_classes.append(c.index)
    out["testable_classes"] = testable
    out["aligned_classes"] = aligned_classes
    out["aligned_fraction"] = aligned / testable if testable else None
    return out


TIE = 0.75  # alternatives within 25% of the assigned mutual score count as ties


def _break_ties(chosen: dict[int, int], mutual: np.ndarray, labelled, leaves, hierarchy) -> dict[int, int]:
    """Resolves near-ties by closeness to the other classes' dataset synsets.

    A model's catch-all class receives many leaves at similar rates, so hard
    labels alone cannot tell "ankle boot" from "trouser" for footwear's third
    class; the classes of one model usually share a domain, so the tie goes to
    the candidate nearest the other assigned classes (the search's coherence
    principle). Unassigned columns only, so the mapping stays one-to-one.
    """
    if hierarchy is None or len(chosen) < 2:
        return chosen
    out = dict(chosen)
    for i, c in chosen.items():
        alts = np.flatnonzero(mutual[i] >= TIE * mutual[i, c])  # vectorised: 1,000 columns per class
        if len(alts) < 2:
            continue
        used = set(out.values()) - {c}
        alts = [int(a) for a in alts if a not in used]
        if len(alts) < 2:
            continue
        others = [leaves[labelled[out[k]][0]] for k in out if k != i]
        d = hierarchy.distance_matrix([leaves[labelled[a][0]] for a in alts], others)
        close = np.where(d == 0, 1.0, 1.0 / np.where(d > 0, d, 1.0)).mean(axis=1)
        out[i] = max(range(len(alts)), key=lambda k: (close[k], mutual[i, alts[k]]))
        out[i] = alts[out[i]]
    return out


class _Relatedness:
    """Is a synset equal to, above or below any corpus leaf? O(depth) per question.

    The leaves' WordNet ancestors are gathered once; then a target is related
    to some leaf iff it is one of those ancestors or one of its own ancestors
    is a leaf. (Asking per class x leaf was 1M questions at ImageNet scale.)
    """

    def __init__(self, leaves):
        from plugin.core.hierarchy import default_wordnet

        self.wn = default_wordnet()
        self.leaves = set(leaves)
        self.above: set[str] = set()
        for leaf in leaves:
            try:
                self.above |= self.wn.ancestors(leaf)
            except ValueError:  # a custom (non-WordNet) leaf: only itself
                self.above.add(leaf)

    def any_leaf(self, target: str) -> bool:
        if target in self.above or target in self.leaves:
            return True
        try:
            return not self.leaves.isdisjoint(self.wn.ancestors(target))
        except ValueError:
            return False


_REL_CACHE: dict[tuple[str, str], bool] = {}


def _related(a: str, b: str) -> bool:
    key = (a, b)
    if key not in _REL_CACHE:
        try:
            _REL_CACHE[key] = wordnet_related(a, b)
        except ValueError:  # a custom (non-WordNet) node
            _REL_CACHE[key] = a == b
    return _REL_CACHE[key]


def verdict_for(ev: dict, num_classes: int, names: dict[str, str]) -> str | None:
    """The verdict one order supports, or None."""
    pairs = ev.get("mapping", [])
    if len(pairs) < min(MIN_PAIRS, ev["classes_in_order"]) or ev["mapping_strength"] < MIN_STRENGTH:
        return None
    ds = ev["dataset"]
    if ev["identity"] and num_classes == ev["classes_in_order"] + ev["offset"]:
        return f"{ds} classifier, index-aligned"
    mapping = ", ".join(f"{p['model_class']}->{names.get(p['dataset_synset'], p['dataset_synset'])}" for p in pairs)
    return f"{ds} classes, permuted ({mapping})"


@register_check("dataset_index")
def dataset_index_check(ctx: CheckContext) -> CheckResult:
    """Reports, per known order, the evidence and one overall verdict."""
    num_classes = ctx.result.findings.num_classes
    orders = known_orders(ctx.corpus, num_classes, getattr(ctx.info, "pretrained_cfg", None))
    if not orders:
        return CheckResult("dataset_index", False, {"verdict": "no known dataset order"},
                           reason="neither the corpus nor timm knows a label order for this model")
    names = {leaf.synset: leaf.name for leaf in ctx.corpus.leaves}
    evidence = [evaluate_order(o, ctx) for o in orders]
    best, verdict = None, "no known dataset order"
    for ev in sorted(evidence, key=lambda e: -e["mapping_strength"]):
        v = verdict_for(ev, num_classes, names)
        if v:
            best, verdict = ev, v
            break
    summary = {"verdict": verdict, "dataset": best["dataset"] if best else None, "orders": evidence}
    metrics = {}
    if best:
        metrics["dataset_index.mapping_strength"] = best["mapping_strength"]
        if best["accuracy_as_dataset"] is not None:
            metrics["dataset_index.accuracy_as_dataset"] = best["accuracy_as_dataset"]
        if best["aligned_fraction"] is not None:
            metrics["dataset_index.aligned_fraction"] = best["aligned_fraction"]
    out = Path(ctx.out_dir) / "dataset_index"
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"verdict: {verdict}", ""]
    for ev in evidence:
        lines.append(f"{ev['dataset']}: strength {ev['mapping_strength']:.2f}, accuracy as dataset "
                     f"{ev['accuracy_as_dataset'] if ev['accuracy_as_dataset'] is None else round(ev['accuracy_as_dataset'], 3)}"
                     f" on {ev['labelled_images']} labelled images, aligned {len(ev['aligned_classes'])}/{ev['testable_classes']}"
                     f" testable classes, identity={ev['identity']}")
    (out / "dataset_index.txt").write_text("\n".join(lines) + "\n")
    return CheckResult("dataset_index", True, summary, metrics, (out / "dataset_index.txt",))
