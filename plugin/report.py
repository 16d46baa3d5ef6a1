"""Self-contained HTML reports: one per investigation (``report.html``; a scan's page is in crawler.scan.view).

Pure rendering: images are embedded as data URIs and there is no script, so
a report opens anywhere, including inline in the MLflow UI's artifact view.
No MLflow here; :mod:`plugin.tracking` logs what this returns.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from plugin.core.corpus import Corpus
from plugin.core.findings import Findings
from plugin.core.images import as_rgb
from plugin.view import evidence_sentence

MAX_CLASS_ROWS = 300  # a 1000-class model lists its found classes first, then stops
THUMBS_PER_CLASS = 8

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.answer{font-size:19px;font-weight:600;margin:10px 0}
.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-size:13px;margin-right:6px;background:#eef}
.hi{background:#d8f5dd}.mid{background:#fff2c6}.lo{background:#fbd9d9}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #dde;padding:4px 7px;vertical-align:top;text-align:left}
th{background:#f4f5fa} tr.nf td{color:#889}
.thumbs img{width:40px;height:40px;margin:1px;image-rendering:pixelated;border:1px solid #ccd}
.small{font-size:12px;color:#556} code{font-size:12px}
img.heat{max-width:100%;border:1px solid #dde}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary with an ellipsis: never mid-word.

    Only a first word longer than ``limit`` makes the result longer than ``limit``.
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit]
    cut = cut[: cut.rindex(" ")] if " " in cut else text.split(" ", 1)[0]
    cut = cut.rstrip(" ,;:")
    return cut + "\u2026" if len(cut) < len(text) else cut


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def thumbnail(img: np.ndarray, size: int = 40) -> str:
    """A data URI of one corpus image shrunk (or grown) to ``size`` pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(as_rgb(img)).resize((size, size), Image.Resampling.BILINEAR).save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def _conf_class(c: float) -> str:
    return "hi" if c >= 0.5 else "mid" if c >= 0.2 else "lo"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Iterable[str] | None = None) -> str:
    """Cells are HTML already (escape before)."""
    rc = list(row_classes) if row_classes is not None else None
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for k, r in enumerate(rows):
        cls = f' class="{rc[k]}"' if rc and rc[k] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    return "\n".join(out) + "</table>"


def investigation_html(findings: Findings, corpus: Corpus | None = None, class_searches: Sequence | None = None,
                       checks: Sequence[tuple[str, str]] = (), heatmap: str | Path | bytes | None = None) -> str:
    """The investigator's page for one model.

    Args:
        findings: the concluded findings (verdict, per-class confidence, provenance).
        corpus: the searched corpus, for found-sample thumbnails.
        class_searches: ``SearchResult.classes`` (their ``samples``), aligned with ``findings.classes``.
        checks: ``(check name, its verdict)`` pairs.
        heatmap: the heatmap PNG (path or bytes) to embed.
    """
    f = findings
    v = f.verdict
    samples = {cs.finding.index: cs.samples for cs in (class_searches or [])}
    parts = [f"<h1>{_e(f.model)}</h1>",
             f"<div class=\"small\">domain-finder investigation on corpus <code>{_e(f.corpus)}</code></div>",
             f"<div class=\"answer\" id=\"answer\">{_e(v.answer or v.kind)}</div>",
             f"<span class=\"badge {_conf_class(v.confidence)}\" id=\"confidence\">confidence {v.confidence:.2f}</span>"
             f"<span class=\"badge\">verdict {_e(v.kind)}</span>"
             f"<span class=\"badge\">{v.classes_found}/{f.num_classes} classes found "
             f"({f.found_fraction:.1%})</span><span class=\"badge\">{f.queries} queries</span>"
             f"<span class=\"badge {_conf_class(f.stability)}\" id=\"stability\">stability {f.stability:.2f}"
             + (f", {f.uncertain} uncertain" if f.uncertain else "") + "</span>"]
    if v.dataset_order:
        parts.append(f"<span class=\"badge\">dataset order: {_e(v.dataset_order)}</span>")
    if v.domains:
        parts.append("<p>Per-class domains: " + _e(", ".join(f"{n} \u00d7{k}" for n, k in v.domains)) + "</p>")
    if f.flags:
        parts.append("<h2>Flags</h2>" + _table(["flag", "classes", "evidence"], [
            (_e(fl.kind), _e(", ".join(map(str, fl.classes))), _e(evidence_sentence(fl.kind, fl.classes, fl.evidence)))
            for fl in f.flags]))
    if checks:
        parts.append("<h2>Checks</h2>" + _table(["check", "verdict"], [(_e(n), _e(t)) for n, t in checks]))

    order = sorted(f.classes, key=lambda c: (not c.found, c.domain is None, c.index))
    shown = order[:MAX_CLASS_ROWS]
    rows, classes = [], []
    for c in shown:
        top = ", ".join(f"{t.name} {t.score:.2f}" for t in c.top_leaves[:5])
        ru = c.runner_up
        runner = (f"{_e(ru.domain.name if ru.domain else '-')} ({_e(', '.join(n.name for n in ru.leaves[:4]))}) "
                  f"L={ru.functional_score:.2f}" if ru else "-")
        thumbs = ""
        if corpus is not None and samples.get(c.index):
            thumbs = "".join(f"<img alt=\"sample\" src=\"{thumbnail(corpus.leaves[j].images[k])}\">"
                             for j, k in samples[c.index][:THUMBS_PER_CLASS])
        status = c.status if c.status == "uncertain" else "found" if c.found else \
            ("weak guess" if c.domain else "not found")
        rows.append((str(c.index), status, f"{c.stability:.2f}",
                     _e(c.domain.name if c.domain else "-"), _e(", ".join(n.name for n in c.leaves) or "-"),
                     f"{c.functional_score:.2f}", f"<span class=\"badge {_conf_class(c.confidence)}\">"
                     f"{c.confidence:.2f}</span>" + (" ambiguous" if c.ambiguous else ""),
                     runner, _e(top), f"<div class=\"thumbs\">{thumbs}</div>"))
        classes.append("" if c.found else "nf")
    parts.append("<h2>Per class</h2>")
    if len(order) > len(shown):
        parts.append(f"<p class=\"small\">The first {len(shown)} of {len(order)} classes (found classes first).</p>")
    parts.append(_table(["class", "status", "stability", "domain", "chosen leaves", "L (Wilson)", "confidence", "runner-up",
                         "top leaves (raw score)", "found samples"], rows, classes))
    if heatmap is not None:
        data = heatmap if isinstance(heatmap, bytes) else (Path(heatmap).read_bytes() if Path(heatmap).is_file()
                                                           else None)
        if data:
            parts.append("<h2>Functional scores</h2><p class=\"small\">Chosen leaves are outlined in red.</p>"
                         f"<img class=\"heat\" alt=\"heatmap\" src=\"{png_data_uri(data)}\">")
    p = f.provenance or {}
    prov = [("repo", p.get("repo", f.model)), ("revision", p.get("revision") or "-"),
            ("sha256", ", ".join(f"{k}: {h}" for k, h in (p.get("sha256") or {}).items()) or "-"),
            ("tool", f"{p.get('tool', 'mlflow-domain-finder')} {p.get('tool_version', '')}"),
            ("corpus", f"{p.get('corpus', f.corpus)} (digest {p.get('corpus_digest', '-')})"),
            ("recipe", p.get("recipe", "-")), ("time", p.get("time", "-")), ("MLflow run", p.get("mlflow_run_id", "-"))]
    parts.append("<h2>Provenance</h2>" + _table(["what", "value"], [(_e(k), f"<code>{_e(x)}</code>") for k, x in prov]))
    parts.append("<details><summary>recipe</summary><pre>" + _e(json.dumps(f.recipe, indent=1)) + "</pre></details>")
    return _page(f"domain-finder: {f.model}", "\n".join(parts))
