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
        w.writerow(["index", "found", "status", "stability", "domain_synset", "domain", "leaves", "functional_score", "semantic_score",
                    "objective", "n_samples", "top_leaf", "top_score"])
        for c in f.classes:
            top = c.top_leaves[0] if c.top_leaves else None
            w.writerow([c.index, c.found, c.status or ("found" if c.found else "not-found"), f"{c.stability:.4f}",
                        c.domain.synset if c.domain else "", c.domain.name if c.domain else "",
                        ";".join(n.name for n in c.leaves), f"{c.functional_score:.4f}", f"{c.semantic_score:.4f}",
                        f"{c.objective:.4f}", c.n_samples, top.name if top else "", f"{top.score:.4f}" if top else ""])
    paths.append(out / "classes.csv")
    paths.append(heatmap(result, corpus, out / "heatmap.png"))
    # Per-class montages for the MAX_MONTAGES strongest classes; a 1,000-class model also gets one
    # capped contact sheet instead of 1,000 PNGs (lazy corpora decode only what is drawn).
    with_samples = sorted((cs for cs in result.classes if cs.samples),
                          key=lambda cs: (not cs.finding.found, -cs.finding.functional_score, cs.finding.index))
    for cs in with_samples[:MAX_MONTAGES]:
        imgs = [corpus.leaves[j].images[k] for j, k in cs.samples[:montage_samples]]
        fc = cs.finding
        caption = (f"class {fc.index}: {fc.domain.name if fc.domain else '?'} ({fc.status or ('found' if fc.found else 'weak')}, "
                   f"{fc.n_samples} samples, confidence {fc.confidence:.2f})")
        paths.append(montage(imgs, out / "montages" / f"class_{fc.index:04d}.png", caption=caption))
    if len(with_samples) > MAX_MONTAGES:
        paths.append(contact_sheet(with_samples[:SHEET_CLASSES], corpus, out / "contact_sheet.png"))
    return paths


MAX_MONTAGES = 64  # per-class montage PNGs at most
SHEET_CLASSES = 200  # classes on the contact sheet at most (4 samples each)


def contact_sheet(classes, corpus: Corpus, path: Path, per_class: int = 4, tile: int = 40, cols: int = 5) -> Path:
    """One PNG with ``per_class`` samples of many classes, ``cols`` classes per row, each labelled by index."""
    from PIL import Image, ImageDraw

    block = per_class * tile
    rows = max(1, -(-len(classes) // cols))
    sheet = Image.new("RGB", (cols * block, rows * (tile + 12)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, cs in enumerate(classes):
        x0, y0 = (n % cols) * block, (n // cols) * (tile + 12)
        f = cs.finding
        draw.text((x0 + 2, y0), f"{f.index}: {f.domain.name if f.domain else '?'}"[:28], fill=(0, 0, 0))
        for k, (j, i) in enumerate(cs.samples[:per_class]):
            im = Image.fromarray(as_rgb(corpus.leaves[j].images[i])).resize((tile, tile), Image.Resampling.BILINEAR)
            sheet.paste(im, (x0 + k * tile, y0 + 12))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def heatmap(result: SearchResult, corpus: Corpus, path: Path, max_rows: int = 60, max_cols: int = 30) -> Path:
    """Functional scores, classes x top leaves (found classes first for big models)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = result.scores.scores
    rows = [c.index for c in result.findings.classes if c.found] or list(range(scores.shape[0]))
    rows = rows[:max_rows]
    index = {s: j for j, s in enumerate(result.scores.leaves)}
    by_class = {c.index: c for c in result.findings.classes}
    chosen = {(i, index[n.synset]) for i in rows for n in by_class[i].leaves if n.synset in index} \
        if all(i in by_class for i in rows) else set()
    # The chosen leaves always get a column, then the best-scoring others.
    first = list(dict.fromkeys(j for _, j in sorted(chosen)))[:max_cols]
    rest = [j for j in np.argsort(-scores[rows].max(axis=0), kind="stable") if j not in first]
    cols = first + [int(j) for j in rest[: max_cols - len(first)]]
    sub = scores[np.ix_(rows, cols)]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(cols) + 2), max(3, 0.3 * len(rows) + 1.5)))
    im = ax.imshow(sub, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    from matplotlib.patches import Rectangle

    col_of = {j: x for x, j in enumerate(cols)}
    for y, i in enumerate(rows):  # outline each class's chosen leaves
        for x in (col_of[j] for (ci, j) in chosen if ci == i and j in col_of):
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.6))
    ax.set_xticks(range(len(cols)), [corpus.leaves[j].name[:18] for j in cols], rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [f"class {i}" for i in rows], fontsize=7)
    ax.set_title(f"functional scores l(class, leaf): {result.findings.model} (red: chosen leaves)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def montage(images: list[np.ndarray], path: Path, tile: int = 64, cols: int = 8, caption: str | None = None) -> Path:
    """A grid of samples, each shrunk or grown to ``tile`` pixels, under an optional one-line caption."""
    from PIL import Image, ImageDraw

    rows = max(1, -(-len(images) // cols))
    top = 14 if caption else 0
    sheet = Image.new("RGB", (cols * tile, rows * tile + top), (255, 255, 255))
    if caption:
        ImageDraw.Draw(sheet).text((3, 1), caption[: cols * tile // 6], fill=(0, 0, 0))
    for k, img in enumerate(images):
        im = Image.fromarray(as_rgb(img)).resize((tile, tile), Image.Resampling.BICUBIC)
        sheet.paste(im, ((k % cols) * tile, (k // cols) * tile + top))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
