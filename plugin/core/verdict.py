"""Step 5: the model-level verdict from the per-class findings."""
from __future__ import annotations

from plugin.core.corpus import Corpus
from plugin.core.findings import ClassFinding, Node, Verdict


def model_verdict(classes: list[ClassFinding], corpus: Corpus, max_span: float = 6.0, min_depth: int = 4) -> Verdict:
    """The model-level domain: the LCA over found classes' domains.

    The classes share one domain only if that LCA is specific enough (at
    least ``min_depth`` below the root: "artifact" yes, "physical entity" or
    "object" no) and no class's domain lies more than ``max_span`` hops below
    it. Otherwise the verdict is several domains, with the LCA for reference.
    """
    domains = [c.domain.synset for c in classes if c.found and c.domain]
    if not domains:
        return Verdict("not-found", None)
    hier = corpus.hierarchy
    lca = hier.lca(domains)
    if lca is None:
        return Verdict("several-domains", None)
    span = max(hier.distance(lca, d) for d in set(domains))
    kind = "one-domain" if span <= max_span and hier.depth(lca) >= min_depth else "several-domains"
    return Verdict(kind, Node(lca, hier.name(lca)))
