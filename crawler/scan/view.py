"""A scan as an investigator reads it: the parent run's description and ``scan_report.html``.

Security outcomes first and loud (refused and failed rows in red, never
greyed out), every row linked to its run. Where links work (see
:mod:`plugin.view`): the parent run's description is Markdown that the MLflow
UI renders itself, so its relative ``#/experiments/...`` links open the run.
``scan_report.html`` links by absolute URL when the UI's address is known
(``--ui-url``, or an ``http(s)`` tracking URI); otherwise a few lines of
script link the run ids to the UI that shows the page. Inline under Artifacts
it sits in a frame sandboxed to ``allow-scripts``, where a plain click on a
link opens nothing and a Ctrl-click (or middle-click) opens the run in a new
tab, so the page says so in its first line.
"""
from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Sequence

from plugin.models.checkpoint import sha256_file
from plugin.view import ML_WORKFLOW, run_url, view_url

# Outcomes that need no look (done, or settled before): everything else is a security verdict or a failure.
QUIET = ("investigate", "already-audited", "skipped-documented", "skipped-encoder", "submitted")
DESCRIPTION_ROWS = 40  # the parent run's description lists this many models; the report lists all

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:12px;color:#1d2330}
h1{font-size:20px;margin:0 0 4px} .small{font-size:12px;color:#556} .how{font-size:14px;margin:4px 0}
.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-size:13px;margin:0 6px 4px 0;background:#eef}
.alarm{background:#c62828;color:#fff;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%;table-layout:fixed}
td,th{border:1px solid #dde;padding:4px 6px;vertical-align:top;text-align:left;overflow-wrap:break-word}
th{background:#f4f5fa} tr.alarm td{background:#fde3e3;color:#7f1010;font-weight:600}
code{font-size:12px} td.run code{word-break:break-all}
"""
# Widths for a ~1,000 px artifact frame (MLflow at 1600 px): a model id and a 32-digit run id on two lines at most.
COLUMNS = (("outcome", "12%"), ("model", "16%"), ("answer", "15%"), ("stability", "8%"), ("flags", "10%"),
           ("found / queries / s", "9%"), ("reason", "18%"), ("run", "12%"))


# Shown by the MLflow UI, the page is a blob: URL of the UI's own origin (blob:http://host:5000/<uuid>), in a frame
# sandboxed to allow-scripts: that origin is where the runs are. Opened as a file, the links stay run ids.
FRAME_LINKS = ("(function(){var m=/^blob:(https?:\\/\\/[^\\/]+)\\//.exec(location.href);if(!m)return;"
               "document.querySelectorAll('a[data-run]').forEach(function(a){"
               "a.href=m[1]+'/'+a.getAttribute('data-run');});})();")


def attention_first(rows: Sequence[dict]) -> list[dict]:
    """Refused and failed rows first (by outcome), then the rest, each by repo."""
    return sorted(rows, key=lambda r: (r.get("outcome") in QUIET, r.get("outcome", ""), r.get("repo", "")))


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _answer(r: dict) -> str:
    if not r.get("verdict") or r.get("outcome") not in ("investigate", "already-audited"):
        return "-"
    conf = f" \u00b7 {r['confidence']}" if r.get("confidence") else ""
    return f"{r.get('domain') or 'none'} \u00b7 {r['verdict']}{conf}"


def scan_page(source: str, rows: Sequence[dict], *, run_id: str = "", experiment_id: str = "",
              seconds: float = 0.0, ui_base: str = "") -> str:
    """The scan's self-contained HTML page; ``rows`` are :class:`ScanRow` dicts.

    Its one script (:data:`FRAME_LINKS`, only without ``ui_base``) gives run-id links the UI's address.
    """
    ranked = attention_first(rows)
    counts = Counter(r.get("outcome", "?") for r in rows)

    def link(r: dict) -> str:
        rid = r.get("run_id") or ""
        url = run_url(ui_base, experiment_id, rid)
        if url:
            return f"<a href=\"{_e(url)}\" target=\"_blank\" rel=\"noopener\">{_e(rid[:8])}</a>"
        if not rid:
            return "-"
        # No address known: FRAME_LINKS gives the link one when the page is shown by the MLflow UI.
        path = run_url("/", experiment_id, rid)[1:]
        return f"<a data-run=\"{_e(path)}\" target=\"_blank\" rel=\"noopener\"><code>{_e(rid)}</code></a>"

    cells = []
    for r in ranked:
        cells.append("<tr class=\"{}\">".format("" if r.get("outcome") in QUIET else "alarm") + "".join(
            f"<td>{c}</td>" for c in (
                _e(r.get("outcome", "")), f"{_e(r.get('repo', ''))} <code>{_e(str(r.get('sha', ''))[:8])}</code>",
                _e(_answer(r)), _e(r.get("stability", "") or "-"), _e(r.get("flags", "") or "-"),
                _e(f"{r.get('classes_found') or '-'} / {r.get('queries') or '-'} / {float(r.get('seconds') or 0):.1f}"),
                _e(r.get("reason", "") or "-"))) + f"<td class=\"run\">{link(r)}</td></tr>")
    where = (f"the UI at <code>{_e(ui_base)}</code>" if ui_base else
             "the UI that shows this page (run ids when opened on its own; <code>--ui-url</code> sets an address)")
    body = [f"<h1>Scan of {_e(source)}</h1>",
            f"<p class=\"how\"><b>To open a run</b>, Ctrl-click (\u2318-click) or middle-click its link: in MLflow's "
            "Artifacts view a plain click is blocked by the frame's sandbox. The scan run's Overview links every run.</p>",
            f"<div class=\"small\">{len(rows)} models in {seconds:.0f} s; scan run <code>{_e(run_id)}</code>; "
            f"links to {where}.</div>",
            "<p>" + "".join(f"<span class=\"badge {'' if k in QUIET else 'alarm'}\">{_e(k)} {n}</span>"
                            for k, n in sorted(counts.items(), key=lambda kv: (kv[0] in QUIET, kv[0]))) + "</p>",
            "<table><colgroup>" + "".join(f"<col style=\"width:{w}\">" for _, w in COLUMNS) + "</colgroup><tr>"
            + "".join(f"<th>{_e(h)}</th>" for h, _ in COLUMNS) + "</tr>", *cells, "</table>",
            f"<script>{FRAME_LINKS}</script>" if not ui_base else ""]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>domain-finder scan: "
            f"{_e(source)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _md(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ").replace("[", "\\[").replace("]", "\\]")


def scan_description(source: str, rows: Sequence[dict], *, experiment_id: str, seconds: float) -> str:
    """The parent run's Markdown description: counts, then one linked line per model, failures first.

    The UI renders it itself (no sandbox), so the relative ``#/...`` links open each run.
    """
    counts = Counter(r.get("outcome", "?") for r in rows)
    loud = ", ".join(f"**{k.upper()} {n}**" for k, n in sorted(counts.items()) if k not in QUIET)
    quiet = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()) if k in QUIET)
    lines = [f"**Scan of `{_md(source)}`**: {len(rows)} models in {seconds:.0f} s. " + "; ".join(
                 x for x in (loud, quiet) if x) + ".", "",
             f"[All runs in the headline view]({view_url('', experiment_id)}); `scan_report.html` has every row.",
             "", "| outcome | model | answer | flags | run |", "|---|---|---|---|---|"]
    ranked = attention_first(rows)
    for r in ranked[:DESCRIPTION_ROWS]:
        rid = r.get("run_id") or ""
        run = f"[{rid[:8]}](#/experiments/{experiment_id}/runs/{rid}?{ML_WORKFLOW})" if rid else "-"
        outcome = r.get("outcome", "")
        outcome = outcome if outcome in QUIET else f"**{outcome.upper()}**"
        lines.append(f"| {_md(outcome)} | {_md(r.get('repo', ''))} | {_md(_answer(r))} | "
                     f"{_md(r.get('flags') or '-')} | {run} |")
    if len(ranked) > DESCRIPTION_ROWS:
        lines.append(f"\n{len(ranked) - DESCRIPTION_ROWS} more in `scan_report.html`.")
    return "\n".join(lines)


def downloaded_hashes(folder: str | Path, prefix: str) -> dict[str, str]:
    """``{prefix}<file>: sha256`` for every file downloaded into ``folder`` (kept on refused runs too)."""
    out = {}
    root = Path(folder)
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[f"{prefix}{p.relative_to(root).as_posix()}"] = sha256_file(p)
    return out
