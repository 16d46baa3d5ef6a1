"""WordNet 3.0 noun hierarchy and custom trees over corpus leaves.

We read Debian's ``wordnet-base`` files directly instead of going through
NLTK: a synset id such as ``n02690373`` is the byte offset of its line in
``data.noun``, so one seek per synset rebuilds the ImageNet tree in
milliseconds, with no corpus download and no patched reader.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from plugin.core.errors import HierarchyError
from plugin.core.settings import wordnet_dir

DEFAULT_WORDNET_DIR = wordnet_dir()
ROOT = "n00001740"  # entity.n.01
_HYPERNYM_POINTERS = ("@", "@i")


@dataclass(frozen=True)
class Synset:
    """One WordNet noun synset."""

    wnid: str
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]
    gloss: str

    @property
    def name(self) -> str:
        return self.lemmas[0].replace("_", " ")


def normalize_wnid(wnid: str) -> str:
    """Returns ``nXXXXXXXX`` for ``n02690373``, ``02690373`` or ``2690373``."""
    raw = str(wnid).strip()
    digits = raw[1:] if raw[:1] in ("n", "N") else raw
    if not digits.isdigit():
        raise HierarchyError(f"not a WordNet noun synset id: {wnid!r} (expected e.g. n02690373)")
    return "n" + digits.zfill(8)


class WordNet:
    """Minimal reader of the WordNet 3.0 noun database files."""

    def __init__(self, root: str | os.PathLike = DEFAULT_WORDNET_DIR):
        self.root = Path(root)
        self._data = self.root / "data.noun"
        if not self._data.is_file():
            raise HierarchyError(
                f"WordNet noun data not found at {self._data}; install it with "
                "`apt-get install wordnet-base` or set DOMAIN_FINDER_WORDNET"
            )
        self._index: dict[str, list[str]] | None = None
        # Per-instance caches: an lru_cache on a method would keep every instance alive.
        self._synsets: dict[str, Synset] = {}
        self._ancestors: dict[str, frozenset[str]] = {}

    def synset(self, wnid: str) -> Synset:
        """Reads one synset by id (cached).

        Raises:
            HierarchyError: the id is not the offset of a noun synset.
        """
        wnid = normalize_wnid(wnid)
        cached = self._synsets.get(wnid)
        if cached is None:
            cached = self._synsets[wnid] = self._read(wnid)
        return cached

    def ancestors(self, wnid: str) -> frozenset[str]:
        """The synset itself and all its hypernyms, up to the root (cached)."""
        wnid = normalize_wnid(wnid)
        out = self._ancestors.get(wnid)
        if out is None:
            acc = {wnid}
            for h in self.synset(wnid).hypernyms:
                acc |= self.ancestors(h)
            out = self._ancestors[wnid] = frozenset(acc)
        return out

    def _read(self, wnid: str) -> Synset:
        offset = int(wnid[1:])
        with open(self._data, "rb") as fh:
            fh.seek(offset)
            line = fh.readline().decode("utf-8", "replace")
        fields = line.split()
        if not fields or fields[0] != wnid[1:] or (len(fields) > 2 and fields[2] != "n"):
            raise HierarchyError(f"unknown WordNet noun synset {wnid}")
        n_words = int(fields[3], 16)
        lemmas = tuple(fields[4 : 4 + 2 * n_words : 2])
        p = 4 + 2 * n_words
        n_ptrs = int(fields[p])
        hypernyms = []
        for k in range(n_ptrs):
            symbol, target, pos = fields[p + 1 + 4 * k : p + 4 + 4 * k]
            if symbol in _HYPERNYM_POINTERS and pos == "n":
                hypernyms.append("n" + target)
        gloss = line.split(" | ", 1)[1].strip() if " | " in line else ""
        return Synset(wnid, lemmas, tuple(hypernyms), gloss)

    def lookup(self, key: str) -> str:
        """Resolves ``airliner``, ``airliner.n.01`` or a synset id to a synset id."""
        key = key.strip()
        if key[:1] in "nN" and key[1:].isdigit() or key.isdigit():
            return self.synset(key).wnid
        lemma, sense = key, 1
        parts = key.rsplit(".", 2)
        if len(parts) == 3 and parts[1] == "n" and parts[2].isdigit():
            lemma, sense = parts[0], int(parts[2])
        offsets = self._lemma_index().get(lemma.lower().replace(" ", "_"))
        if not offsets or not 1 <= sense <= len(offsets):
            raise HierarchyError(f"no WordNet noun sense {key!r}")
        return "n" + offsets[sense - 1]

    def _lemma_index(self) -> dict[str, list[str]]:
        if self._index is None:
            index = {}
            with open(self.root / "index.noun", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith(" "):
                        continue  # licence header
                    f = line.split()
                    n_senses, n_ptrs = int(f[2]), int(f[3])
                    index[f[0]] = f[6 + n_ptrs : 6 + n_ptrs + n_senses]
            self._index = index
        return self._index


@functools.lru_cache(maxsize=4)
def default_wordnet(root: str | None = None) -> WordNet:
    return WordNet(root or DEFAULT_WORDNET_DIR)


class Hierarchy:
    """A rooted DAG over corpus leaves (a tree where WordNet allows).

    Distances are shortest paths in the undirected graph, as in the paper's
    closeness ``1 / d``. Some WordNet synsets have several parents; we keep
    them all, which is what the ImageNet tree does as well.
    """

    def __init__(self, parents: Mapping[str, Sequence[str]], names: Mapping[str, str], leaves: Iterable[str]):
        self.parents: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in parents.items()}
        for node, ps in list(self.parents.items()):
            for p in ps:
                self.parents.setdefault(p, ())
        self.names = dict(names)
        self.leaves = list(dict.fromkeys(leaves))
        missing = [leaf for leaf in self.leaves if leaf not in self.parents]
        if missing:
            raise HierarchyError(f"leaves missing from the tree: {missing[:5]}")
        self.children: dict[str, list[str]] = {n: [] for n in self.parents}
        for node, ps in self.parents.items():
            for p in ps:
                self.children[p].append(node)
        self._check_acyclic()
        # Per-instance caches, freed with the instance (an lru_cache on methods leaked every Hierarchy).
        self._rows: dict[str, "np.ndarray"] = {}  # source -> distances to every node (index order)
        self._index: dict[str, int] | None = None
        self._graph = None
        self._ancestors: dict[str, frozenset[str]] = {}
        self._depth: dict[str, int] = {}

    # -- construction -----------------------------------------------------
    @classmethod
    def from_wordnet(cls, synsets: Iterable[str], wordnet: WordNet | None = None) -> "Hierarchy":
        """Builds the WordNet hypernym closure over ``synsets`` (the leaves)."""
        wn = wordnet or default_wordnet()
        leaves = [normalize_wnid(s) for s in synsets]
        parents: dict[str, tuple[str, ...]] = {}
        names: dict[str, str] = {}
        todo = list(leaves)
        while todo:
            node = todo.pop()
            if node in parents:
                continue
            syn = wn.synset(node)
            parents[node] = syn.hypernyms
            names[node] = syn.name
            todo.extend(h for h in syn.hypernyms if h not in parents)
        return cls(parents, names, leaves)

    @classmethod
    def from_edges(cls, path: str | os.PathLike, base: "Hierarchy | None" = None, wordnet: WordNet | None = None) -> "Hierarchy":
        """Reads a parent-edge file and grafts it onto ``base`` (or WordNet).

        Each non-comment line is ``child<TAB>parent[<TAB>readable name]``.
        Parents that are WordNet synsets and not yet in the tree pull in their
        WordNet ancestors, so users can hang their own nodes anywhere in the
        noun hierarchy (paper §6.1). Leaves are the nodes without children.
        """
        path = Path(path)
        if not path.is_file():
            raise HierarchyError(f"tree file not found: {path}")
        parents: dict[str, list[str]] = {k: list(v) for k, v in (base.parents.items() if base else [])}
        names = dict(base.names) if base else {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = [c.strip() for c in line.split("\t")]
            if len(cols) < 2 or not cols[0] or not cols[1]:
                raise HierarchyError(f"{path}:{lineno}: expected 'child<TAB>parent[<TAB>name]', got {line!r}")
            child, parent = cols[0], cols[1]
            parents.setdefault(child, [])
            if parent not in parents[child]:
                parents[child].append(parent)
            if len(cols) > 2 and cols[2]:
                names[child] = cols[2]
        # Pull in WordNet ancestors of grafted synset parents.
        unresolved = [p for ps in parents.values() for p in ps if p not in parents]
        if unresolved:
            wn_part = cls.from_wordnet([p for p in unresolved if _looks_like_wnid(p)], wordnet)
            for node, ps in wn_part.parents.items():
                parents.setdefault(node, list(ps))
                names.setdefault(node, wn_part.names[node])
            dangling = [p for ps in parents.values() for p in ps if p not in parents]
            for p in dangling:
                parents[p] = []  # a custom root
        for node in parents:
            names.setdefault(node, node)
        has_child = {p for ps in parents.values() for p in ps}
        leaves = [n for n in parents if n not in has_child]
        return cls(parents, names, leaves)

    def restricted_to(self, leaves: Iterable[str]) -> "Hierarchy":
        """The sub-hierarchy spanned by ``leaves`` and their ancestors."""
        leaves = list(leaves)
        keep: set[str] = set()
        for leaf in leaves:
            keep |= self.ancestors(leaf)
        return Hierarchy({n: [p for p in self.parents[n] if p in keep] for n in keep}, {n: self.names.get(n, n) for n in keep}, leaves)

    # -- queries ----------------------------------------------------------
    def __contains__(self, node: str) -> bool:
        return node in self.parents

    def _check(self, node: str) -> str:
        if node not in self.parents:
            raise HierarchyError(f"{node!r} is not a node of this hierarchy")
        return node

    def name(self, node: str) -> str:
        return self.names.get(self._check(node), node)

    def ancestors(self, node: str) -> frozenset[str]:
        """The node itself and every node above it."""
        out = self._ancestors.get(node)
        if out is None:
            acc = {self._check(node)}
            for p in self.parents[node]:
                acc |= self.ancestors(p)
            out = self._ancestors[node] = frozenset(acc)
        return out

    def depth(self, node: str) -> int:
        """Longest path to a root, so deeper means more specific."""
        d = self._depth.get(node)
        if d is None:
            ps = self.parents[self._check(node)]
            d = self._depth[node] = 0 if not ps else 1 + max(self.depth(p) for p in ps)
        return d

    def is_ancestor(self, a: str, b: str) -> bool:
        """True if ``a`` is ``b`` or lies above it."""
        return a in self.ancestors(b)

    def related(self, a: str, b: str) -> bool:
        """True if one node is an ancestor of the other (or they are equal)."""
        return self.is_ancestor(a, b) or self.is_ancestor(b, a)

    def _node_index(self) -> dict[str, int]:
        if self._index is None:
            import numpy as np
            from scipy.sparse import csr_matrix

            self._index = {n: k for k, n in enumerate(self.parents)}
            rows = [self._index[c] for c, ps in self.parents.items() for _ in ps]
            cols = [self._index[p] for ps in self.parents.values() for p in ps]
            n = len(self._index)
            self._graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        return self._index

    def _distance_rows(self, sources: Sequence[str]):
        """Shortest-path lengths from each source to every node, one C-level BFS per new source.

        Rows are cached per instance (about 8 bytes x nodes each), so the
        candidates of a 1,000-class model cost one batched call, not 1M lookups.
        """
        import numpy as np
        from scipy.sparse.csgraph import shortest_path

        index = self._node_index()
        todo = list(dict.fromkeys(s for s in sources if s not in self._rows))
        for s in todo:
            self._check(s)
        if todo:
            dist = shortest_path(self._graph, directed=False, unweighted=True, indices=[index[s] for s in todo])
            for s, row in zip(todo, np.atleast_2d(dist)):
                self._rows[s] = row
        return np.stack([self._rows[s] for s in sources]) if sources else np.zeros((0, len(index)))

    def distance(self, a: str, b: str) -> float:
        """Shortest-path length; ``inf`` between disconnected custom roots."""
        index = self._node_index()
        self._check(b)
        row = self._rows.get(a)
        if row is None:
            row = self._distance_rows([a])[0]
        return float(row[index[b]])

    def closeness(self, a: str, b: str) -> float:
        """The paper's closeness ``1 / d``; 1.0 for the same node."""
        d = self.distance(a, b)
        return 1.0 if d == 0 else 1.0 / d

    def distance_matrix(self, nodes: Sequence[str], others: Sequence[str] | None = None):
        """Pairwise distances, ``nodes`` x ``others`` (default ``nodes``), vectorised."""
        index = self._node_index()
        others = nodes if others is None else others
        for o in others:
            self._check(o)
        rows = self._distance_rows(list(nodes))
        return rows[:, [index[o] for o in others]].astype(float)

    def lca(self, nodes: Iterable[str]) -> str | None:
        """Lowest common ancestor: the deepest node above all ``nodes``."""
        nodes = list(nodes)
        if not nodes:
            raise HierarchyError("lca of an empty set")
        common = set(self.ancestors(nodes[0]))
        for n in nodes[1:]:
            common &= self.ancestors(n)
        if not common:
            return None
        if len(common) == 1:
            return next(iter(common))
        deepest = max(self.depth(c) for c in common)
        tied = sorted(c for c in common if self.depth(c) == deepest)
        if len(tied) == 1:
            return tied[0]
        spread = self.distance_matrix(tied, nodes).sum(axis=1)
        return max(zip(tied, spread), key=lambda t: (-t[1], t[0]))[0]

    def _check_acyclic(self) -> None:
        state: dict[str, int] = {}
        for start in self.parents:
            if state.get(start):
                continue
            stack = [(start, iter(self.parents[start]))]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    raise HierarchyError(f"cycle in tree through {nxt!r}")
                elif not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, iter(self.parents[nxt])))


def _looks_like_wnid(node: str) -> bool:
    try:
        normalize_wnid(node)
        return True
    except HierarchyError:
        return False


def wordnet_related(a: str, b: str, wordnet: WordNet | None = None) -> bool:
    """True if one synset is the other or lies above it in full WordNet.

    Corpus hierarchies only hold the ancestors of their leaves; this asks
    WordNet itself, e.g. whether ImageNet's "missile" lies below a "rocket" leaf.
    """
    wn = wordnet or default_wordnet()
    a, b = normalize_wnid(a), normalize_wnid(b)
    return a in wn.ancestors(b) or b in wn.ancestors(a)

