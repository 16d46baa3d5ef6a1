"""Prompts from the corpus search: the warm start and the WordNet neighbours used for prompt edits.

A class's warm start is what the corpus search believed of it: its chosen
(found or weak-guess) leaves, its domain, then its best-scoring leaves. Each
synset becomes prompts from its WordNet lemmas and gloss; a leaf outside
WordNet (a custom tree) gives its name only.
"""
from __future__ import annotations

from plugin.core.errors import HierarchyError
from plugin.core.hierarchy import Hierarchy, WordNet
from plugin.generative.search import Prompt

TEMPLATE = "a photo of a {}"


def synset_prompts(synset: str, hierarchy: Hierarchy | None, wordnet: WordNet | None, origin: str = "warm",
                   lemmas: int = 2) -> list[Prompt]:
    """A photo prompt per lemma (at most ``lemmas``) and one ``name, gloss`` prompt."""
    try:
        syn = wordnet.synset(synset) if wordnet is not None else None
    except HierarchyError:
        syn = None
    if syn is None:
        name = hierarchy.name(synset) if hierarchy is not None and synset in hierarchy else synset
        return [Prompt(TEMPLATE.format(name), synset, origin)]
    words = [w.replace("_", " ") for w in syn.lemmas[:lemmas]]
    out = [Prompt(TEMPLATE.format(w), syn.wnid, origin) for w in words]
    gloss = syn.gloss.split(";")[0].strip().strip('"')
    if gloss:
        out.append(Prompt(f"{words[0]}, {gloss}", syn.wnid, origin))
    return out


def warm_start(finding, hierarchy: Hierarchy | None, wordnet: WordNet | None, limit: int) -> list[Prompt]:
    """Up to ``limit`` prompts for a :class:`~plugin.core.findings.ClassFinding`, strongest evidence first."""
    synsets = [n.synset for n in finding.leaves]
    if finding.domain is not None:
        synsets.append(finding.domain.synset)
    synsets += [t.synset for t in sorted(finding.top_leaves, key=lambda t: -t.adjusted)]
    out: dict[str, Prompt] = {}
    for s in dict.fromkeys(synsets):
        for p in synset_prompts(s, hierarchy, wordnet):
            out.setdefault(p.text, p)
        if len(out) >= limit:
            break
    return list(out.values())[:limit]


def wordnet_neighbours(hierarchy: Hierarchy | None, wordnet: WordNet | None):
    """``prompt -> neighbour prompts``: the synset's hypernyms and its siblings in the corpus tree."""
    def neighbours(prompt: Prompt) -> list[Prompt]:
        if not prompt.synset:
            return []
        near: list[str] = []
        if wordnet is not None:
            try:
                near += list(wordnet.synset(prompt.synset).hypernyms)
            except HierarchyError:
                pass
        if hierarchy is not None and prompt.synset in hierarchy:
            for parent in hierarchy.parents.get(prompt.synset, ()):
                near += [c for c in hierarchy.children.get(parent, ()) if c != prompt.synset]
                near.append(parent)
        out: dict[str, Prompt] = {}
        for s in dict.fromkeys(near):
            for p in synset_prompts(s, hierarchy, wordnet, origin="edit", lemmas=1):
                out.setdefault(p.text, p)
        return list(out.values())

    return neighbours
