"""Typed findings with a stable JSON form.

Tools script against these keys, so they only ever grow: ``version``,
``summary`` (first: answer, confidence, coverage, provenance), ``model``,
``num_classes``, ``queries``, ``verdict``, ``classes`` and, last, ``recipe``;
checks add their own top-level keys through ``extra``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINDINGS_VERSION = 2  # 2: a leading summary block, provenance, the recipe last


@dataclass(frozen=True)
class Node:
    """A node of the corpus tree (a leaf or an inner synset)."""

    synset: str
    name: str

    def to_dict(self) -> dict:
        return {"synset": self.synset, "name": self.name}


@dataclass(frozen=True)
class LeafScore:
    synset: str
    name: str
    score: float  # raw functional score l(i, j)
    adjusted: float  # Wilson lower bound given the leaf's number of images

    def to_dict(self) -> dict:
        return {"synset": self.synset, "name": self.name, "score": round(self.score, 6), "adjusted": round(self.adjusted, 6)}


@dataclass(frozen=True)
class RunnerUp:
    """The best cluster of a class whose domain lies far from the chosen one (decoys, mixed models)."""

    leaves: tuple[Node, ...]
    domain: Node | None
    functional_score: float
    objective: float
    distance: float  # hops between the chosen and the runner-up domains

    def to_dict(self) -> dict:
        return {"leaves": [n.to_dict() for n in self.leaves], "domain": self.domain.to_dict() if self.domain else None,
                "functional_score": round(self.functional_score, 6), "objective": round(self.objective, 6),
                "distance": self.distance}


@dataclass(frozen=True)
class Flag:
    """A model-level warning: ``decoy-suspected``, ``mixed-domains``, ``label-contradiction`` or ``sink-class``."""

    kind: str
    classes: tuple[int, ...]
    evidence: dict = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "classes": list(self.classes), "evidence": self.evidence}


@dataclass(frozen=True)
class LeafSpend:
    """What the score pass spent on one leaf."""

    synset: str
    images: int  # sent by the score pass (each as ``copies_per_image`` queries)
    queries: int  # the score pass's and step 4's
    filtered: int = 0  # images step 4 sent once each (the chosen leaves' unsent images)

    def to_dict(self) -> dict:
        return {"synset": self.synset, "images": self.images, "queries": self.queries, "filtered": self.filtered}


@dataclass(frozen=True)
class ClassFinding:
    """What the search concluded for one output class of the model."""

    index: int
    found: bool
    leaves: tuple[Node, ...]
    domain: Node | None
    functional_score: float
    semantic_score: float
    objective: float
    n_samples: int
    top_leaves: tuple[LeafScore, ...]
    runner_up: RunnerUp | None = None
    ambiguous: bool = False  # the runner-up's score is within a margin of the chosen one
    confidence: float = 0.0  # in [0, 1]; falls on wrong answers
    stability: float = 1.0  # share of bootstrap resamples returning this answer
    status: str = ""  # found | uncertain (the answer does not hold) | not-found

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "found": self.found,
            "status": self.status or ("found" if self.found else "not-found"),
            "stability": round(self.stability, 4),
            "leaves": [n.to_dict() for n in self.leaves],
            "domain": self.domain.to_dict() if self.domain else None,
            "functional_score": round(self.functional_score, 6),
            "semantic_score": round(self.semantic_score, 6),
            "objective": round(self.objective, 6),
            "n_samples": self.n_samples,
            "top_leaves": [t.to_dict() for t in self.top_leaves],
            "runner_up": self.runner_up.to_dict() if self.runner_up else None,
            "ambiguous": self.ambiguous,
            "confidence": round(self.confidence, 6),
        }


@dataclass(frozen=True)
class Verdict:
    """The model-level answer (:mod:`plugin.core.verdict`); never more than the evidence supports."""

    kind: str  # one-domain | several-domains | inconclusive | not-found
    domain: Node | None
    answer: str = ""  # one line for people: "one domain: footwear (3/3 classes covered)"
    confidence: float = 0.0  # mean per-class confidence over all classes (unfound classes count 0)
    classes_found: int = 0
    num_classes: int = 0
    domains: tuple[tuple[str, int], ...] = ()  # per-class domains grouped: (("clothing", 7), ("footwear", 3))
    dataset_order: str = ""  # what the dataset_index check identified, if anything

    @property
    def coverage(self) -> float:
        return self.classes_found / max(1, self.num_classes)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "domain": self.domain.to_dict() if self.domain else None, "answer": self.answer,
                "confidence": round(self.confidence, 6), "classes_found": self.classes_found,
                "num_classes": self.num_classes, "domains": [{"name": n, "classes": k} for n, k in self.domains],
                "dataset_order": self.dataset_order}


@dataclass(frozen=True)
class Findings:
    """The model-level finding: per-class findings plus a verdict."""

    model: str
    num_classes: int
    queries: int
    recipe: dict
    classes: tuple[ClassFinding, ...]
    verdict: Verdict
    corpus: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    flags: tuple[Flag, ...] = ()
    leaf_spend: tuple[LeafSpend, ...] = ()  # per leaf, what the score pass spent
    exhaustive_queries: int | None = None  # what an exhaustive pass would have spent
    provenance: dict = field(default_factory=dict, hash=False)  # repo, revision, sha256, tool, corpus digest, time
    filter_queries: int = 0  # step 4: unsent images of the chosen leaves, one query each (part of ``queries``)

    @property
    def found_fraction(self) -> float:
        return sum(c.found for c in self.classes) / max(1, len(self.classes))

    @property
    def stability(self) -> float:
        """The model's stability: the mean over classes of the share of resamples returning each class's answer."""
        return float(sum(c.stability for c in self.classes) / len(self.classes)) if self.classes else 1.0

    @property
    def uncertain(self) -> int:
        """Classes whose answer did not hold under resampling (reported, never counted as found)."""
        return sum(c.status == "uncertain" for c in self.classes)

    @property
    def mean_functional_score(self) -> float:
        found = [c.functional_score for c in self.classes if c.found]
        return float(sum(found) / len(found)) if found else 0.0

    def to_dict(self) -> dict:
        out = {
            "version": FINDINGS_VERSION,
            "summary": self.summary(),
            "model": self.model,
            "corpus": self.corpus,
            "num_classes": self.num_classes,
            "queries": self.queries,
            "verdict": self.verdict.to_dict(),
            "flags": [f.to_dict() for f in self.flags],
            "classes": [c.to_dict() for c in self.classes],
            "exhaustive_queries": self.exhaustive_queries,
            "filter_queries": self.filter_queries,
            "leaf_spend": [l.to_dict() for l in self.leaf_spend],
        }
        for k, v in self.extra.items():
            out.setdefault(k, v)
        out.pop("recipe", None)
        out["recipe"] = self.recipe  # last: the 30 knobs are the least read part
        return out

    def summary(self) -> dict:
        """The block a reader needs first: answer, confidence, coverage, provenance."""
        v = self.verdict
        return {"answer": v.answer or v.kind, "verdict": v.kind, "domain": v.domain.name if v.domain else None,
                "confidence": round(v.confidence, 6), "stability": round(self.stability, 4),
                "coverage": {"classes_found": sum(c.found for c in self.classes), "num_classes": self.num_classes,
                             "found_fraction": round(self.found_fraction, 6), "uncertain": self.uncertain},
                "provenance": self.provenance}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def with_extra(self, key: str, value: Any) -> "Findings":
        from dataclasses import replace

        return replace(self, extra={**self.extra, key: value})
