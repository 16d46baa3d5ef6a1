"""Scan a model source: investigate every undocumented classifier once per revision.

One parent MLflow run per scan (tags ``domain_finder.scan=1`` and
``domain_finder.source``), one child run per model attempted. MLflow is the
ledger, there is no other state file: a model whose ``(repo_id, sha)`` already
has a FINISHED run tagged ``domain_finder.status=finished`` is skipped as
``already-audited``; so is one whose earlier run ended with a deterministic
verdict about the files themselves (``refused-unsafe``, ``failed-corrupt``).
Timeouts, crashes and hub errors are retried on the next scan.

Each investigation runs in a child process (``multiprocessing`` "spawn"
context) that is killed after ``timeout_s`` (:mod:`crawler.scan.backends`).
The child run is created by the scan first and its id handed to the worker,
so a crash or timeout is recorded from outside (``FAILED`` +
``domain_finder.error``). The ``local`` backend investigates one model at a
time in this process's worker; the ``ray`` backend
(:mod:`crawler.scan.ray_backend`) runs the same step as one Ray task per
model, many at once, while this process lists lazily and keeps the ledger.

Outcomes (see :mod:`plugin.outcomes`): ``investigate`` (done), ``already-audited``,
``skipped-encoder``, ``skipped-documented`` and ``skipped-unsupported-format``
(decided from the listing's files and config by :mod:`plugin.models.formats`,
before any download; no run), or a failure category (a FAILED run):
``refused-remote-code`` (also decided before any download; a security outcome
belongs in the runs table), ``refused-unsafe``, ``invalid-repo``,
``failed-corrupt``, ``hub-error``, ``timeout``, ``resource-limit``, ``crash``.

One repo never takes down a scan: every per-repo step (its listing entry, card,
config, download, static checks, investigation) runs behind one boundary
(:func:`_scan_guarded`) that turns any exception into a FAILED child run with
its reason and category; a failing listing ends the listing, not the scan, as
a ``(listing)`` row. The listing is de-duplicated by ``(repo, sha)``, the
ledger is asked before the card is scored, and a model is claimed in the
ledger (:func:`crawler.scan.ledger.claim`) before it is fetched.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace

from crawler.cards import assess_documentation
from crawler.scan import ledger
from crawler.scan.backends import run_claimed
from crawler.scan.ledger import find_audit
from crawler.scan.options import ScanOptions
from crawler.scan.report import ScanReport, ScanRow, summary_csv
from crawler.hub import HubModel, ModelSource, get_source
from plugin import tracking
from plugin.core.recipe import Recipe
from plugin.models.formats import Detected
from plugin.outcomes import (ALREADY_AUDITED, FAILED, INVESTIGATE, REFUSED_REMOTE_CODE, SKIPPED_DOCUMENTED,
                             SKIPPED_ENCODER, SKIPPED_UNSUPPORTED_FORMAT, T_OWNER, failure_category, limits_of)
from plugin.report import shorten
from plugin.tracking import T_DOC_SCORE, T_DOMAIN, T_ERROR, T_MODEL_ID, T_OUTCOME, T_REVISION, T_SOURCE, T_STATUS, \
    T_VERDICT
from plugin.view import ui_base

LISTING_ROW = "(listing)"  # the row that records a listing that failed part-way
T_LISTING_ERROR = "domain_finder.listing_error"


def scan(source_spec: str, corpus: str = "demo", recipe: Recipe | str | None = None,
         experiment: str | None = None, **options) -> ScanReport:
    """Scans ``source_spec`` (``demo``, ``dir:PATH``, ``hf[:ENDPOINT]``) once; see the module docstring.

    Args:
        source_spec: where to list models (see :func:`crawler.hub.get_source`).
        corpus: corpus name or folder, passed to each investigation.
        recipe: a Recipe, a recipe name/path, or None for the defaults.
        experiment: the MLflow experiment, and so the ledger's scope; default
            the caller's active experiment, else ``$MLFLOW_EXPERIMENT_NAME``,
            else ``domain-finder``, as for the CLI.
        **options: the other fields of :class:`ScanOptions`.
    """
    opts = ScanOptions.build(recipe, corpus=corpus, **options)
    with tracking.experiment(experiment, keep_active=True):
        return run_scan(source_spec, opts)


def run_scan(source_spec: str, opts: ScanOptions) -> ScanReport:
    """Scans ``source_spec`` once with validated options; the caller prints ``report.table()``."""
    source_opts = dict(opts.source_options)
    if opts.limit is not None:
        source_opts["limit"] = opts.limit
    source_opts.setdefault("timeout_s", opts.fetch_deadline_s)
    report = ScanReport(source_spec, "")
    pool = None
    if opts.backend == "ray":
        from crawler.scan import ray_backend

        ray_backend.connect(opts)  # a bad address or a store the nodes can't share: refused before any run
    tracking.init_store()  # once, safely, before any worker or concurrent scan touches it
    with get_source(source_spec, **source_opts) as source, tracking.scan_run(source_spec) as parent:
        report.run_id = parent.info.run_id
        exp = parent.info.experiment_id
        ledger.hold(parent.info.run_id)
        tracking.set_tags({T_OWNER: ledger.owner_tag()})
        ledger.reap_dead_scans(exp)
        ledger.reap_dead_claims(exp, opts.timeout_s)
        tracking.log_params({"scan.source": source_spec, **opts.params(),
                             **{f"scan.source.{k}": ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                                for k, v in opts.source_options.items()}})
        tracking.log_params({f"recipe.{k}": v for k, v in opts.recipe.to_params().items()})
        target = _Target(exp, parent.info.run_id, source, source_spec, source_opts)
        report.experiment_id = exp
        if opts.backend == "ray":
            pool = ray_backend.RayPool(opts)
            tracking.log_params({"scan.tasks_in_flight": pool.size})
        if opts.progress:
            print(f"scan {source_spec}: starting (scan run {report.run_id[:8]}, experiment {exp}, backend "
                  f"{opts.backend}{f', up to {pool.size} tasks in flight' if pool else ''}); listing models", flush=True)
        if pool is None:
            # Listing first gives the bar its total and ETA; each entry keeps only what triage needs, not
            # its card (up to 512 KiB) and config (up to 4 MiB), so a hostile hub's listing stays small.
            models = [_Listed.of(m) for m in _listing(source, report)]
            bar = _ModelBar(len(models), opts.progress)
        else:  # many models at once: list lazily, so the driver's memory does not grow with the hub
            models = (_Listed.of(m) for m in _listing(source, report))
            bar = _ModelBar(None, opts.progress)
        pending: dict[str, _Claimed] = {}

        def finish(rows: list[ScanRow]) -> None:
            for row in rows:
                report.rows.append(row)
                bar.done(_row_line(row))

        for listed in models:
            fmt = listed.detected.format if listed.detected else "unknown"
            report.formats[fmt] = report.formats.get(fmt, 0) + 1
            bar.start(listed.model.repo_id)
            step = _scan_guarded(target, listed.model, opts, listed)
            if isinstance(step, ScanRow):
                finish([step])
            elif pool is None:
                finish([_run_local(target, step, opts)])
            else:
                pending[step.run_id] = step
                finish([_finished(pending.pop(k)) for k in pool.submit(_job(target, step, opts), step.run_id)])
        if pool is not None:
            finish([_finished(pending.pop(k)) for k in pool.drain()])
        bar.close()
        report.seconds = time.time() - parent.info.start_time / 1000  # the run's own duration, to the second
        counts = Counter(r.outcome for r in report.rows)
        tracking.log_metrics({"scan.models": len(report.rows), "scan.seconds": report.seconds,
                              **{f"scan.{k}": v for k, v in counts.items()},
                              **{f"scan.format.{k}": v for k, v in report.formats.items()}})
        tracking.log_text(summary_csv(report.rows), "scan_summary.csv")
        tracking.log_text(report.table(), "scan_summary.md")
        tracking.log_text(report.html(ui_base(tracking.tracking_uri(), opts.ui_url)), "scan_report.html")
        tracking.describe_run(report.description())
        ledger.release(parent.info.run_id)
    return report


def _listing(source: ModelSource, report: ScanReport):
    """The source's models, each ``(repo, sha)`` once; a failing listing becomes a ``(listing)`` row."""
    seen: set[tuple[str, str]] = set()
    it = iter(source.list_models())
    while True:
        try:
            model = next(it, None)
        except Exception as e:  # noqa: BLE001 - what was listed stands; the rest waits for the next scan
            reason = f"{type(e).__name__}: {e}"
            report.rows.append(ScanRow(LISTING_ROW, "", failure_category(e), reason=reason))
            tracking.set_tags({T_LISTING_ERROR: reason})
            print(f"listing stopped: {reason[:300]}", flush=True)
            return
        if model is None:
            return
        key = (model.repo_id, model.sha)
        if key in seen:  # a listing that repeats itself lists each model once
            continue
        seen.add(key)
        yield model


@dataclass(frozen=True)
class _Target:
    """Where a scan's child runs go: the experiment, the parent run and the source."""

    experiment_id: str
    parent_id: str
    source: ModelSource
    source_spec: str
    source_options: dict


@dataclass(frozen=True)
class _Claimed:
    """A model this scan claimed: its row so far and the run it is investigated into."""

    row: ScanRow
    run_id: str
    model: HubModel
    t0: float


@dataclass(frozen=True)
class _Listed:
    """A listed model without its card and config, with the triage facts drawn from them."""

    model: HubModel
    doc: object | None  # crawler.cards.Documentation; None: assessed (and failed) again under the guard
    detected: Detected | None  # the model format; None when the listed config could not be read

    @classmethod
    def of(cls, model: HubModel) -> _Listed:
        try:
            doc, detected = _triage_facts(model)
        except Exception:  # noqa: BLE001 - kept whole: _scan_one assesses it again and fails it with its reason
            return cls(model, None, None)
        return cls(replace(model, card_text=None, config=None), doc, detected)


def _triage_facts(model: HubModel):
    """``(documentation assessment, model format)`` from the model's card, files and config."""
    # A config that is listed but unreadable is the loader's verdict to give (failed-corrupt), not a format's.
    unread = model.config is None and "config.json" in model.filenames
    detected = None if unread else model.detected
    return assess_documentation(model.card_text, model.config, model.card_data), detected


def _triage(model: HubModel, opts: ScanOptions, doc, detected: Detected | None) -> ScanRow | None:
    """A row for a model the scan skips without a run (remote code, unsupported, encoder, documented), else None."""
    row = ScanRow(model.repo_id, model.sha or "", "")
    if detected is not None and detected.refused:
        row.outcome, row.reason = REFUSED_REMOTE_CODE, detected.reason
        return row
    if detected is not None and not detected.supported:
        row.outcome, row.reason = SKIPPED_UNSUPPORTED_FORMAT, f"{detected.format}: {detected.reason}"
        return row
    if detected is not None and detected.encoder:
        row.outcome, row.reason = SKIPPED_ENCODER, detected.reason or "no classification head (a feature encoder)"
        return row
    if not doc.undocumented and not opts.include_documented:
        row.outcome = SKIPPED_DOCUMENTED
        row.reason = (f"undocumented score {doc.score:.2f}"
                      + (f"; datasets: {', '.join(doc.datasets)}" if doc.datasets else "")
                      + ("; " + "; ".join(doc.reasons) if doc.reasons else ""))
        return row
    return None


def _scan_guarded(target: _Target, model: HubModel, opts: ScanOptions,
                  listed: _Listed | None = None) -> ScanRow | _Claimed:
    """The per-repo boundary: any exception becomes a FAILED child run with its category.

    Returns the model's row when the scan is done with it, or the claim to investigate.
    """
    t0 = time.time()
    try:
        step = _scan_one(target, model, opts, listed)
    except Exception as e:  # noqa: BLE001 - one repo never takes down a scan
        row = ScanRow(str(model.repo_id), str(model.sha or ""), "")
        try:
            step = _fail_entry(target, model, opts, row, f"{type(e).__name__}: {e}", failure_category(e),
                               limits_of(e))
        except Exception as e2:  # noqa: BLE001 - even the store failed: the row still says what happened
            row.outcome, row.reason = failure_category(e), f"{type(e).__name__}: {e} (not recorded: {e2})"
            step = row
    if isinstance(step, ScanRow):
        step.seconds = time.time() - t0
    return step


def _run_local(target: _Target, claimed: _Claimed, opts: ScanOptions) -> ScanRow:
    """Investigates a claimed model here, in one spawned worker (the local backend)."""
    try:
        run_claimed(target.source, target.source_spec, claimed.model, opts, claimed.run_id)
    except Exception as e:  # noqa: BLE001 - the store failed mid-way: the row still says what happened
        claimed.row.outcome, claimed.row.reason = failure_category(e), f"{type(e).__name__}: {e} (not recorded)"
        claimed.row.seconds = time.time() - claimed.t0
        return claimed.row
    return _finished(claimed)


def _finished(claimed: _Claimed) -> ScanRow:
    """The row of a claimed model whose run has ended, read back from the run."""
    ledger.release(claimed.run_id)  # a Ray task released it in its own process, not in this one
    row = claimed.row
    try:
        row = _row_of_run(row, tracking.get_run(claimed.run_id))
    except Exception as e:  # noqa: BLE001 - the store is unreachable: the row says so, the scan goes on
        row.outcome, row.reason = failure_category(e), f"{type(e).__name__}: {e} (run not read back)"
    row.seconds = time.time() - claimed.t0
    return row


def _job(target: _Target, claimed: _Claimed, opts: ScanOptions):
    """The Ray task's job: the demo hub's loopback URL instead of ``demo``, which would build a hub per task."""
    from crawler.scan.ray_backend import Job

    url = getattr(getattr(target.source, "server", None), "url", None)
    fetch_spec = f"hf:{url}" if url else target.source_spec
    options = {k: v for k, v in target.source_options.items() if k in ("timeout_s", "read_timeout_s")}
    return Job(claimed.run_id, claimed.model, tracking.tracking_uri(), fetch_spec, target.source_spec, options, opts)


def _entry_tags(target: _Target, model: HubModel) -> dict:
    return {T_MODEL_ID: str(model.repo_id), T_REVISION: str(model.sha or ""), T_SOURCE: target.source_spec,
            T_STATUS: "queued"}


def _already(row: ScanRow, prior) -> ScanRow:
    """An ``already-audited`` row: settled, backing off, or being audited by another live scan."""
    row.outcome, row.run_id = ALREADY_AUDITED, prior.info.run_id
    row.domain = prior.data.tags.get(T_DOMAIN, "")
    row.flags = tracking.flags_of_tags(prior.data.tags)
    state = "running in another scan" if prior.info.status == "RUNNING" else prior.data.tags.get(T_OUTCOME, INVESTIGATE)
    row.reason = f"run {prior.info.run_id[:8]} ({state})"
    return row


def _fail_entry(target: _Target, model: HubModel, opts: ScanOptions, row: ScanRow, reason: str, category: str,
                limits: dict | None = None) -> ScanRow:
    """A listing entry or step that failed before any claim: one FAILED run per ``(repo, sha)``."""
    run_id, prior = ledger.claim(target.experiment_id, target.parent_id, str(model.repo_id), str(model.sha or ""),
                                 _entry_tags(target, model), timeout_s=opts.timeout_s, limits=opts.limits(),
                                 retry_failed=opts.retry_failed)
    if run_id is None:
        return _already(row, prior) if prior is not None else row
    row.run_id = run_id
    ledger.fail(run_id, reason, category, limits=limits, backoff_base_s=opts.retry_backoff_s)
    return _row_of_run(row, tracking.get_run(run_id))


def _scan_one(target: _Target, model: HubModel, opts: ScanOptions,
              listed: _Listed | None = None) -> ScanRow | _Claimed:
    row = ScanRow(model.repo_id, model.sha or "", "")
    if model.error:  # the listing entry itself: invalid id or sha, or its card/config could not be fetched
        limits = {model.limit[0]: model.limit[1]} if model.limit else None
        return _fail_entry(target, model, opts, row, model.error, model.category or "crash", limits)
    # The ledger first: a repo already settled costs no card scoring, no fetch.
    prior = find_audit(target.experiment_id, model.repo_id, model.sha, limits=opts.limits(),
                       retry_failed=opts.retry_failed)
    if prior is not None:
        return _already(row, prior)
    known = listed is not None and listed.doc is not None
    doc, detected = (listed.doc, listed.detected) if known else _triage_facts(model)
    skipped = _triage(model, opts, doc, detected)
    if skipped is not None and skipped.outcome == REFUSED_REMOTE_CODE:  # a security outcome: a FAILED run, loud
        return _fail_entry(target, model, opts, row, skipped.reason, REFUSED_REMOTE_CODE)
    if skipped is not None:
        return skipped
    run_id, holder = ledger.claim(target.experiment_id, target.parent_id, model.repo_id, model.sha,
                                  {**_entry_tags(target, model), T_DOC_SCORE: f"{doc.score:.2f}"},
                                  timeout_s=opts.timeout_s, limits=opts.limits(), retry_failed=opts.retry_failed)
    if run_id is None:
        return _already(row, holder) if holder is not None else row
    row.run_id = run_id
    return _Claimed(row, run_id, model, time.time())


def _row_line(row: ScanRow) -> str:
    """One line per model: its outcome, domain and verdict, or why it has none (never cut mid-word)."""
    what = f"{row.domain or '-'} ({row.verdict}, confidence {row.confidence})" if row.verdict else row.reason
    if row.flags:
        what += f"; flags: {row.flags}"
    return f"{row.repo}@{row.sha[:8]}: {row.outcome}: {shorten(what, 160)}"


class _ModelBar:
    """A per-model progress bar with ETA; each finished model prints its line above it."""

    def __init__(self, total: int | None, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="model", desc="scan", dynamic_ncols=True)

    def start(self, repo: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(shorten(repo, 40))

    def done(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _row_of_run(row: ScanRow, run) -> ScanRow:
    t = run.data.tags
    m = run.data.metrics
    row.verdict = t.get(T_VERDICT, "")
    row.flags = tracking.flags_of_tags(t)
    if "confidence" in m:
        row.confidence = f"{m['confidence']:.2f}"
    if "stability" in m:
        row.stability = f"{m['stability']:.2f}"
    if run.info.status == "FINISHED":
        row.outcome = INVESTIGATE
        row.domain = t.get(T_DOMAIN, "") or t.get(T_VERDICT, "")
        if "classes_found" in m:
            row.classes_found = f"{int(m['classes_found'])}/{run.data.params.get('model.num_classes', '?')}"
        if "queries" in m:
            row.queries = str(int(m["queries"]))
    else:
        row.outcome = t.get(T_OUTCOME, FAILED)
        row.reason = t.get(T_ERROR, f"run ended {run.info.status}")
    return row
