"""How a run reads in the MLflow UI: headline run names, short values, rounding, the shared view, links.

Pure string building, no MLflow: :mod:`plugin.tracking` logs what this
returns. The MLflow UI (3.x) shows a run's name in every view, but tag and
metric columns only once picked, at 100 px each, cut with an ellipsis. So:

- the run name carries the answer (``upper-body · garment · 0.42``), short
  enough for the name column (:data:`NAME_CHARS`); the model id stays a tag;
- headline tag values are short and headline metrics keep 3 significant digits;
- the experiment carries a *shared view* (``mlflow.sharedViewState.<key>``,
  what the UI's "Share" button writes): headline columns picked and sized,
  failures first (sorted by confidence, which also lists child runs flat
  instead of folded under their scan); :func:`view_url` opens it;
- links to runs in an HTML artifact are absolute
  (``http://host/#/experiments/1/runs/<id>?workflowType=machine_learning``):
  a relative ``#/...`` link resolves against the artifact frame's ``blob:``
  URL. That frame is sandboxed to ``allow-scripts`` (MLflow 3.17's built UI:
  no pop-ups, no top navigation, no storage): a plain click on a
  ``target=_blank`` link opens nothing, but a Ctrl/Cmd-, Shift- or
  middle-click opens the run in a new tab (chromium, tested). Markdown
  descriptions, which the UI renders itself, carry links a plain click opens.
"""
from __future__ import annotations

import json
import math
from urllib.parse import urlsplit

SEP = " \u00b7 "  # the middle dot between the parts of a run name
NAME_CHARS = 36  # what the headline view's 310 px name column shows uncut
DOMAIN_MIN = 10  # the domain's share of a long run name
VALUE_CHARS = 24  # a headline tag value (flags); cut further by its column
DOMAIN_CHARS = 16  # the domain tag: what the headline view's 135 px domain column shows uncut
FLAGS_TAG = "flags"  # the flag kinds, short, beside the headline tags (the classes stay in domain_finder.flag.*)
VIEW_KEY = "headline"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY
ML_WORKFLOW = "workflowType=machine_learning"  # the UI's "Model training" mode: runs table, not GenAI overview
FAILURES_FIRST_BY = "confidence"  # refused and failed runs log 0; sorting on it also un-nests child runs
# Columns of the headline view, left to right, with their widths in px; the UI's ids are `type.`key``.
# At 1600 px the table gets 1,273 px beside its check-box column (Created is pinned; Duration left out for
# stability); beside MLflow's assistant panel, name to domain. Measured with `make screenshots`.
VIEW_COLUMNS = (("attributes.`Run Name`", 296), ("runDateAndNestInfo", 150), ("tags.`outcome`", 150),
                ("tags.`domain`", 135), ("tags.`verdict`", 150), ("metrics.`confidence`", 100),
                ("metrics.`found_fraction`", 112), ("metrics.`stability`", 80), ("tags.`flags`", 100),
                ("duration", 80))  # "refused-remote-code" is 126 px of text in a cell with 22 px of padding
CLASS_COLUMNS = ("class", "label", "domain", "status", "stability", "n", "score")  # classes.json, one row a class
# The view's chart mode: one section, a parallel-coordinates plot of the headline metrics, then two bars.
CHART_METRICS = ("confidence", "found_fraction", "classes_found", "queries_total")


def sig3(x: float) -> float:
    """``x`` to 3 significant digits (0.125761 -> 0.126), so metric cells are not cut.

    Whole numbers (counts: 1917 queries) are kept exact, as are NaN and inf;
    from 1,000 up a value is rounded to a whole number (a 4,023.4 s scan reads
    4023, not 4020: as short, and true to the second).
    """
    x = float(x)
    if not math.isfinite(x) or x.is_integer():
        return x
    return float(round(x)) if abs(x) >= 1000 else float(f"{x:.3g}")


def rounded(metrics: dict) -> dict[str, float]:
    """Every value through :func:`sig3`."""
    return {k: sig3(v) for k, v in metrics.items()}


def short(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word or comma with an ellipsis."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    for sep in (", ", " "):
        if sep in cut:
            cut = cut[:cut.rindex(sep)]
            break
    return cut.rstrip(" ,;:\u00b7") + "\u2026"


def short_model(model_id: str) -> str:
    """The model's own name: the last part of ``owner/name`` (the full id stays in the ``model_id`` tag)."""
    return str(model_id).rstrip("/").rsplit("/", 1)[-1] or str(model_id)


def run_name(model_id: str, *, outcome: str, domain: str = "", confidence: float | None = None) -> str:
    """The run's name as the headline: ``upper-body · garment · 0.42``; a failure leads with its outcome.

    A refused or failed run reads ``REFUSED-UNSAFE · name``, upper case, so
    it stands out in a table of lower-case answers. At most :data:`NAME_CHARS`:
    the model name keeps all but :data:`DOMAIN_MIN` characters of the room,
    and the domain (whole in its own column) takes what is left.
    """
    model = short_model(model_id)
    if outcome != "investigate":
        head = f"{outcome.upper()}{SEP}"
        return head + short(model, max(NAME_CHARS - len(head), 6))
    conf = "" if confidence is None else f"{SEP}{confidence:.2f}"
    dom = domain or "none"
    room = NAME_CHARS - len(conf) - len(SEP)  # for the model and the domain
    model = short(model, max(room - min(len(dom), DOMAIN_MIN), 6))
    return f"{model}{SEP}{short(dom, max(room - len(model), 4))}{conf}"


def class_table(classes, labels=None) -> dict[str, list]:
    """Per-class rows as columns for ``mlflow.log_table`` (``classes.json``): the UI shows them as a table.

    ``classes``: the findings' :class:`~plugin.core.findings.ClassFinding` s;
    ``labels``: the model's label names by class index (a list or dict), if any.
    ``score`` is the chosen leaves' functional score (3 significant digits).
    """
    names = dict(enumerate(labels)) if isinstance(labels, (list, tuple)) else dict(labels or {})
    rows = [(c.index, str(names.get(c.index, "")), c.domain.name if c.domain else "",
             c.status or ("found" if c.found else "not-found"), sig3(c.stability), int(c.n_samples),
             sig3(c.functional_score)) for c in classes]
    return {k: [r[i] for r in rows] for i, k in enumerate(CLASS_COLUMNS)}


def flag_kinds(flags) -> str:
    """The ``flags`` tag: the kinds of ``flags`` (each once, in order), short; ``none`` when there are none."""
    return short(",".join(dict.fromkeys(f.kind for f in flags))) or "none"


def view_state() -> str:
    """The headline view as the JSON the UI reads from ``mlflow.sharedViewState.<key>``."""
    ids = [c for c, _ in VIEW_COLUMNS]
    return json.dumps({
        "searchFilter": "", "orderByKey": f"metrics.`{FAILURES_FIRST_BY}`", "orderByAsc": True,
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": [c for c in ids if c.startswith(("tags.", "metrics.", "params."))],
        "columnOrder": ids, "columnWidths": dict(VIEW_COLUMNS),
        "runsExpanded": {}, "runsPinned": [], "runsHidden": [], "runsVisibilityMap": {},
        "runsHiddenMode": "FIRST_10_RUNS", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": None, "groupsExpanded": {}, "autoRefreshEnabled": False,
        "compareRunSections": [{"uuid": "headline", "name": "headline", "display": True, "isReordered": False,
                                "deleted": False, "isGenerated": False}],
        "compareRunCharts": [
            {"uuid": "headline-parallel", "type": "PARALLEL", "metricSectionId": "headline", "deleted": False,
             "isGenerated": False, "runsCountToCompare": 100, "selectedParams": [],
             "selectedMetrics": list(CHART_METRICS)},
            *({"uuid": f"headline-{m}", "type": "BAR", "metricSectionId": "headline", "deleted": False,
               "isGenerated": False, "runsCountToCompare": 100, "metricKey": m} for m in CHART_METRICS[:2])],
    }, sort_keys=True)


def ui_base(tracking_uri: str = "", ui_url: str = "") -> str:
    """The MLflow UI's address: ``ui_url`` if given, else an ``http(s)`` tracking URI; "" when unknown.

    A ``sqlite:`` or file store has no server, so no address can be derived
    (``mlflow ui`` may later serve it anywhere).
    """
    base = (ui_url or "").strip()
    if not base and urlsplit(tracking_uri or "").scheme in ("http", "https"):
        base = tracking_uri
    if not base:
        return ""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) address: {base[:200]!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the UI at ``base`` (see :func:`ui_base`); "" when ``base`` is unknown."""
    if not base or not run_id:
        return ""
    return f"{base}#/experiments/{experiment_id}/runs/{run_id}?{ML_WORKFLOW}"


def view_url(base: str, experiment_id: str, charts: bool = False) -> str:
    """The experiment's runs in the headline view (``charts``: its chart mode, the headline metrics compared).

    Relative (``#/...``) when ``base`` is "", for Markdown the UI renders itself.
    """
    mode = "&compareRunsMode=CHART" if charts else ""
    return f"{base}#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&{ML_WORKFLOW}{mode}"


def evidence_sentence(kind: str, classes, evidence: dict) -> str:
    """A flag's evidence as one or two plain sentences (the raw dict stays in ``findings.json``)."""
    ev = evidence or {}
    cls = ", ".join(map(str, classes))
    if kind == "mixed-domains" and ev.get("groups"):
        groups = "; ".join(_group(g) for g in ev["groups"])
        return (f"The found classes split into {len(ev['groups'])} groups at least {ev.get('min_distance')} hops "
                f"apart in the hierarchy: {groups}.")
    if kind == "label-contradiction" and ev.get("labels"):
        parts = ", ".join(f"class {r.get('class')} is named '{r.get('label')}' but answers for "
                          f"{_name(r.get('domain')) or 'another domain'}" for r in ev["labels"][:6])
        more = " That is most of the found classes." if ev.get("majority") else ""
        return f"The label names disagree with the search: {parts}.{more}"
    if kind == "index-contradiction":
        return ev.get("sentence") or f"The dataset_index check and the search disagree on classes {cls}."
    if kind == "decoy-suspected":
        sides = " and ".join(_name(d) or "?" for d in ev.get("domains") or []) or "two far-apart domains"
        return (f"Classes {cls} each answer strongly for {sides}, paired one-to-one with leaves on both sides: "
                "the signature of planted back doors. Hard labels cannot say which side is planted.")
    if kind == "sink-class":
        return f"Class {cls} takes many leaves far from its own domain: the model labels everything, so it is a sink."
    return f"{kind} on classes {cls}."


def _name(node) -> str:
    if isinstance(node, dict):
        return str(node.get("name") or node.get("synset") or "")
    return str(node or "")


def _group(group) -> str:
    """One group of ``mixed-domains`` evidence: its domain and classes, whatever shape the flag gave it."""
    if isinstance(group, dict):
        domain = _name(group.get("domain")) or "?"
        classes = group.get("classes", [])
        return f"{domain} (classes {', '.join(map(str, classes))})"
    return str(group)
