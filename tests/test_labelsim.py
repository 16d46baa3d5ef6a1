"""Label similarity on the real GloVe 6B 50d vectors."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from plugin.core.errors import ConfigError
from plugin.checks.labelsim import (DEFAULT_THRESHOLD, LabelMatch, label_similarity, load_vectors, phrase_similarity,
                             tokens, tsne_plot)

LABELS = ["sandal", "sneaker", "ankle boot"]
DOMAINS = [["sandal", "shoe"], ["gym shoe", "shoe"], ["boot", "footwear"]]


@pytest.fixture(scope="module")
def kv():
    return load_vectors()


def test_default_vectors_are_glove_and_cached(kv):
    assert kv.vector_size == 50
    assert len(kv) == 400_000
    assert load_vectors() is kv
    # a known GloVe relation, so the words and rows are not misaligned
    assert kv.most_similar("king", topn=1)[0][0] == "prince"


def test_tokens(kv):
    assert tokens("AnkleBoot", kv) == ["ankle", "boot"]
    assert tokens("T-shirt/top", kv) == ["shirt", "top"]
    assert tokens("the_gym_shoe", kv) == ["gym", "shoe"]
    assert tokens("xqzzyw boot", kv) == ["boot"]
    assert tokens("n04133789", kv) == []


def test_true_assignment_beats_every_shuffle(kv):
    true = np.mean([m.similarity for m in label_similarity(kv, LABELS, DOMAINS)])
    shuffled = [np.mean([m.similarity for m in label_similarity(kv, LABELS, [DOMAINS[i] for i in perm])])
                for perm in itertools.permutations(range(3)) if all(i != j for j, i in enumerate(perm))]
    assert len(shuffled) == 2
    assert true > max(shuffled) + 0.2, (true, shuffled)


def test_nearest_token_rule(kv):
    sim = phrase_similarity(kv, "ankle boot", "boot")
    assert sim == pytest.approx(1.0, abs=1e-5)
    # the mean-vector rule would score lower: the rule really is the max
    mean = kv.get_mean_vector(["ankle", "boot"])
    assert float(mean @ kv.get_vector("boot", norm=True)) < 0.95
    (match,) = label_similarity(kv, ["ankle boot"], [["footwear", "boot"]])
    assert match.best_pair == ("boot", "boot")
    assert match.similarity == pytest.approx(1.0, abs=1e-5)
    # a list of domain phrases scores as its best phrase
    assert phrase_similarity(kv, "sneaker", ["digit", "shoe"]) == pytest.approx(phrase_similarity(kv, "sneaker", "shoe"))
    assert phrase_similarity(kv, "sneaker", "shoe") > phrase_similarity(kv, "sneaker", "digit") + 0.4


def test_contradiction_flagged(kv):
    matches = label_similarity(kv, ["sandal", "sandal", "sandal", "seven"], [["digit"], ["sandal", "shoe"], None, ["xqzzyw"]])
    assert all(isinstance(m, LabelMatch) for m in matches)
    assert [m.index for m in matches] == [0, 1, 2, 3]
    assert matches[0].contradicts and matches[0].similarity < DEFAULT_THRESHOLD
    assert matches[0].best_pair == ("sandal", "digit")
    assert not matches[1].contradicts and matches[1].similarity > 0.99
    assert math.isnan(matches[2].similarity) and not matches[2].contradicts and matches[2].domain is None
    assert math.isnan(matches[3].similarity) and not matches[3].contradicts
    with pytest.raises(ConfigError, match="2 label names but 1 domains"):
        label_similarity(kv, ["a", "b"], [None])


def test_threshold_parameter(kv):
    sim = phrase_similarity(kv, "sneaker", "shoe")
    (low,) = label_similarity(kv, ["sneaker"], ["shoe"], threshold=sim - 0.01)
    (high,) = label_similarity(kv, ["sneaker"], ["shoe"], threshold=sim + 0.01)
    assert not low.contradicts and high.contradicts


def test_load_vector_files(tmp_path, kv):
    words = ["boot", "shoe", "digit"]
    glove = tmp_path / "tiny.glove.txt"
    glove.write_text("".join(w + " " + " ".join(f"{x:.6f}" for x in kv[w]) + "\n" for w in words))
    g = load_vectors(glove)
    assert g.index_to_key == words and np.allclose(g["shoe"], kv["shoe"], atol=1e-5)
    small = g  # round-trip through both word2vec formats gensim writes
    for binary in (False, True):
        path = tmp_path / f"tiny.w2v.{'bin' if binary else 'txt'}"
        small.save_word2vec_format(str(path), binary=binary)
        w = load_vectors(path)
        assert w.index_to_key == words and np.allclose(w["digit"], kv["digit"], atol=1e-5)
    with pytest.raises(ConfigError, match="not found"):
        load_vectors(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\nboot 0.1 zz 0.3\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_vectors(bad)


def test_tsne_plot(tmp_path, kv):
    out = tsne_plot(kv, LABELS + ["seven"], DOMAINS + [["digit"]], tmp_path / "plots" / "tsne.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    tiny = tsne_plot(kv, ["sandal"], [["shoe"]], tmp_path / "tiny.png")  # too few points for t-SNE
    assert tiny.stat().st_size > 1000
    with pytest.raises(ConfigError, match="no label or domain"):
        tsne_plot(kv, ["xqzzyw"], [None], tmp_path / "none.png")
