"""Rendering a search result as files: findings.json, classes.csv, a heatmap and montages.

No MLflow here; :mod:`plugin.tracking` logs what this writes.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from plugin.core.images import as_rgb

from plugin.core.corpus import Corpus
from plugin.core.search import SearchResult

def write_artifacts(result: SearchResult, corpus: Corpus, out: Path, montage_samples: int = 16) -> list[Path]:
    """Writes findings.json, classes.csv, heatmap.png and per-class montages."""
    out.mkdir(parents=True, exist_ok=True)
    f = result.findings
    paths = [f.write(out / "findings.json")]
    with open(out / "classes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "found", "domain_synset", "domain", "leaves", "functional_score", "semantic_score",
                    "objective", "n_samples", "top_leaf", "top_score"])
        for c in f.classes:
            top = c.top_leaves[0] if c.top_leaves else None
            w.writerow([c.index, c.found, c.domain.synset if c.domain else "", c.domain.name if c.domain else "",
                        ";".join(n.name for n in c.leaves), f"{c.functional_score:.4f}", f"{c.semantic_score:.4f}",
                        f"{c.objective:.4f}", c.n_samples, top.name if top else "", f"{top.score:.4f}" if top else ""])
    paths.append(out / "classes.csv")
    paths.append(heatmap(result, corpus, out / "heatmap.png"))
    for cs in result.classes:
        if cs.samples:
            imgs = [corpus.leaves[j].images[k] for j, k in cs.samples[:montage_samples]]
            paths.append(montage(imgs, out / "montages" / f"class_{cs.finding.index:04d}.png"))
    return paths


def heatmap(result: SearchResult, corpus: Corpus, path: Path, max_rows: int = 60, max_cols: int = 30) -> Path:
    """Functional scores, classes x top leaves (found classes first for big models)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = result.scores.scores
    rows = [c.index for c in result.findings.classes if c.found] or list(range(scores.shape[0]))
    rows = rows[:max_rows]
    cols = list(np.argsort(-scores[rows].max(axis=0), kind="stable")[:max_cols])
    sub = scores[np.ix_(rows, cols)]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(cols) + 2), max(3, 0.3 * len(rows) + 1.5)))
    im = ax.imshow(sub, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), [corpus.leaves[j].name[:18] for j in cols], rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [f"class {i}" for i in rows], fontsize=7)
    ax.set_title(f"functional scores l(class, leaf): {result.findings.model}")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def montage(images: list[np.ndarray], path: Path, tile: int = 64, cols: int = 8) -> Path:
    """A grid of samples, each shrunk or grown to ``tile`` pixels."""
    from PIL import Image

    rows = max(1, -(-len(images) // cols))
    sheet = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    for k, img in enumerate(images):
        im = Image.fromarray(as_rgb(img)).resize((tile, tile), Image.Resampling.BICUBIC)
        sheet.paste(im, ((k % cols) * tile, (k // cols) * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
