"""Scan a model source: investigate every undocumented classifier once per revision.

One parent MLflow run per scan (tags ``domain_finder.scan=1`` and
``domain_finder.source``), one child run per model attempted. MLflow is the
ledger, there is no other state file: a model whose ``(repo_id, sha)`` already
has a FINISHED run tagged ``domain_finder.status=finished`` is skipped as
``already-audited``; so is one whose earlier run ended with a deterministic
verdict about the files themselves (``refused-unsafe``, ``failed-corrupt``).
Timeouts, crashes and hub errors are retried on the next scan.

Each investigation runs in a child process (``multiprocessing`` "spawn"
context) that is killed after ``timeout_s``. The child run is created by the
parent first and its id handed to the worker, so a crash or timeout is
recorded from the parent (``FAILED`` + ``domain_finder.error``). The worker
exits by itself when the scan process dies (even by SIGKILL), so a rerun does
not race an orphan into a duplicate run.

Outcomes (see :mod:`plugin.tracking`): ``investigate`` (done), ``already-audited``,
``skipped-encoder``, ``skipped-documented``, ``submitted`` (kubernetes backend),
or a failure category: ``refused-unsafe``, ``invalid-repo``, ``failed-corrupt``,
``hub-error``, ``timeout``, ``resource-limit``, ``crash``.

One repo never takes down a scan: every per-repo step (its listing entry, card,
config, download, static checks, investigation) runs behind one boundary
(:func:`_scan_guarded`) that turns any exception into a FAILED child run with
its reason and category; a failing listing ends the listing, not the scan, as
a ``(listing)`` row. The listing is de-duplicated by ``(repo, sha)``, the
ledger is asked before the card is scored, and a model is claimed in the
ledger (:func:`crawler.scan.ledger.claim`) before it is fetched.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from crawler.cards import assess_documentation
from crawler.scan import ledger
from crawler.scan.backends import WorkerLimits, run_isolated, submit_kubernetes
from crawler.scan.ledger import classify_error, find_audit, limits_of
from crawler.scan.options import ScanOptions
from crawler.scan.report import ScanReport, ScanRow, summary_csv
from crawler.scan.view import downloaded_hashes
from crawler.sources import HubModel, ModelSource, get_source
from plugin import tracking
from plugin.core.recipe import Recipe
from plugin.models.checkpoint import preflight
from plugin.models.hub_layout import is_classifier
from plugin.report import shorten
from plugin.view import ui_base
from plugin.tracking import (ALREADY_AUDITED, FAILED, INVESTIGATE, SKIPPED_DOCUMENTED, SKIPPED_ENCODER, SUBMITTED,
                             T_DOC_SCORE, T_DOMAIN, T_ERROR, T_MODEL_ID, T_OUTCOME, T_REVISION, T_SOURCE, T_STATUS,
                             T_OWNER, T_VERDICT)

LISTING_ROW = "(listing)"  # the row that records a listing that failed part-way
T_LISTING_ERROR = "domain_finder.listing_error"


def scan(source_spec: str, corpus: str = "demo", recipe: Recipe | str | None = None,
         experiment: str | None = None, **options) -> ScanReport:
    """Scans ``source_spec`` (``demo``, ``dir:PATH``, ``hf[:ENDPOINT]``) once; see the module docstring.

    Args:
        source_spec: where to list models (see :func:`crawler.sources.get_source`).
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
    """Scans ``source_spec`` once with validated options."""
    source_opts = dict(opts.source_options)
    if opts.limit is not None:
        source_opts["limit"] = opts.limit
    source_opts.setdefault("timeout_s", opts.fetch_deadline_s)
    report = ScanReport(source_spec, "")
    tracking.init_store()  # once, safely, before any worker or concurrent scan touches it
    with get_source(source_spec, **source_opts) as source, tracking.scan_run(source_spec) as parent:
        report.run_id = parent.info.run_id
        exp = parent.info.experiment_id
        ledger.hold(parent.info.run_id)
        tracking.set_tags({T_OWNER: ledger.owner_tag()})
        ledger.reap_dead_scans(exp)
        ledger.reap_dead_claims(exp, opts.timeout_s)
        tracking.log_params({"scan.source": source_spec, **opts.params()})
        tracking.log_params({f"recipe.{k}": v for k, v in opts.recipe.to_params().items()})
        target = _Target(exp, parent.info.run_id, source, source_spec)
        report.experiment_id = exp
        if opts.progress:
            print(f"scan {source_spec}: starting (scan run {report.run_id[:8]}, experiment {exp}); listing models",
                  flush=True)
        # Listing first gives the bar its total and ETA; each entry keeps only what triage needs, not
        # its card (up to 512 KiB) and config (up to 4 MiB), so a hostile hub's listing stays small.
        models = [_Listed.of(m) for m in _listing(source, report)]
        bar = _ModelBar(len(models), opts.progress)
        for listed in models:
            model = listed.model
            bar.start(model.repo_id)
            t0 = time.time()
            row = _scan_guarded(target, model, opts, listed)
            row.seconds = time.time() - t0
            report.rows.append(row)
            bar.done(_row_line(row))
        bar.close()
        report.seconds = time.time() - parent.info.start_time / 1000  # the run's own duration, to the second
        counts: dict[str, int] = {}
        for r in report.rows:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        tracking.log_metrics({"scan.models": len(report.rows), "scan.seconds": report.seconds,
                              **{f"scan.{k}": v for k, v in counts.items()}})
        tracking.log_text(summary_csv(report.rows), "scan_summary.csv")
        tracking.log_text(report.table(), "scan_summary.md")
        tracking.log_text(report.html(ui_base(tracking.tracking_uri(), opts.ui_url)), "scan_report.html")
        tracking.describe_run(report.description())
        ledger.release(parent.info.run_id)
    print(report.table(), end="")
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
            report.rows.append(ScanRow(LISTING_ROW, "", classify_error(e), reason=reason))
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


@dataclass(frozen=True)
class _Listed:
    """A listed model without its card and config, with the triage facts drawn from them."""

    model: HubModel
    doc: object | None  # crawler.cards.Documentation; None: assessed (and failed) again under the guard
    encoder: bool

    @classmethod
    def of(cls, model: HubModel) -> _Listed:
        try:
            doc, encoder = _triage_facts(model)
        except Exception:  # noqa: BLE001 - kept whole: _scan_one assesses it again and fails it with its reason
            return cls(model, None, False)
        return cls(replace(model, card_text=None, config=None), doc, encoder)


def _triage_facts(model: HubModel):
    """``(documentation assessment, is an encoder)`` from the model's card and config."""
    encoder = model.config is not None and not is_classifier(model.config)
    return assess_documentation(model.card_text, model.config), encoder


def _triage(model: HubModel, opts: ScanOptions, doc, encoder: bool) -> ScanRow | None:
    """A row for a model the scan skips without a run (encoder, documented), else None."""
    row = ScanRow(model.repo_id, model.sha or "", "")
    if encoder:
        row.outcome, row.reason = SKIPPED_ENCODER, "num_classes is 0 or config names no classes (a feature encoder)"
        return row
    if not doc.undocumented and not opts.include_documented:
        row.outcome = SKIPPED_DOCUMENTED
        row.reason = (f"undocumented score {doc.score:.2f}"
                      + (f"; datasets: {', '.join(doc.datasets)}" if doc.datasets else "")
                      + ("; " + "; ".join(doc.reasons) if doc.reasons else ""))
        return row
    return None


def _scan_guarded(target: _Target, model: HubModel, opts: ScanOptions, listed: _Listed | None = None) -> ScanRow:
    """The per-repo boundary: any exception becomes a FAILED child run with its category."""
    try:
        return _scan_one(target, model, opts, listed)
    except Exception as e:  # noqa: BLE001 - one repo never takes down a scan
        row = ScanRow(str(model.repo_id), str(model.sha or ""), "")
        try:
            return _fail_entry(target, model, opts, row, f"{type(e).__name__}: {e}", classify_error(e), limits_of(e))
        except Exception as e2:  # noqa: BLE001 - even the store failed: the row still says what happened
            row.outcome, row.reason = classify_error(e), f"{type(e).__name__}: {e} (not recorded: {e2})"
            return row


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


def _scan_one(target: _Target, model: HubModel, opts: ScanOptions, listed: _Listed | None = None) -> ScanRow:
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
    doc, encoder = (listed.doc, listed.encoder) if known else _triage_facts(model)
    skipped = _triage(model, opts, doc, encoder)
    if skipped is not None:
        return skipped
    if opts.backend == "kubernetes":
        return _submit(target, model, opts, row)

    run_id, holder = ledger.claim(target.experiment_id, target.parent_id, model.repo_id, model.sha,
                                  {**_entry_tags(target, model), T_DOC_SCORE: f"{doc.score:.2f}"},
                                  timeout_s=opts.timeout_s, limits=opts.limits(), retry_failed=opts.retry_failed)
    if run_id is None:
        return _already(row, holder) if holder is not None else row
    row.run_id = run_id
    tmp = tempfile.mkdtemp(prefix="domain-finder-scan-")
    verified = False
    try:
        fetched = target.source.fetch_verified(model, Path(tmp) / "model", max_bytes=opts.max_bytes,
                                               deadline=time.monotonic() + opts.fetch_deadline_s)
        verified = fetched.verified
        tracking.set_run_tags(run_id, downloaded_hashes(fetched.folder, tracking.TAG_PREFIX + "sha256."))
        preflight(fetched.folder)  # config limits, safetensors header, pickle allowlist: before any worker
        result = run_isolated(run_id, fetched.folder, str(opts.corpus), opts.recipe, model.repo_id, model.sha,
                              target.source_spec, opts.timeout_s, WorkerLimits(opts.worker_memory, opts.cpu_limit_s))
        if result.category is not None:
            ledger.fail(run_id, result.reason, result.category, verified=verified, limits=result.limits,
                        backoff_base_s=opts.retry_backoff_s)
        else:
            run = tracking.get_run(run_id)
            if run.info.status != "FINISHED":  # the worker recorded its own failure: add the ledger's tags
                ledger.fail(run_id, run.data.tags.get(T_ERROR, "failed"), ledger.category_of(run), verified=verified,
                            backoff_base_s=opts.retry_backoff_s, terminate=False)
    except Exception as e:  # noqa: BLE001 - recorded on the child run; the scan goes on
        ledger.fail(run_id, f"{type(e).__name__}: {e}", classify_error(e), verified=verified, limits=limits_of(e),
                    backoff_base_s=opts.retry_backoff_s)
    finally:
        ledger.release(run_id)
        shutil.rmtree(tmp, ignore_errors=True)
    return _row_of_run(row, tracking.get_run(run_id))


def _submit(target: _Target, model: HubModel, opts: ScanOptions, row: ScanRow) -> ScanRow:
    dest = Path(opts.work_dir or tempfile.mkdtemp(prefix="domain-finder-scan-")) / model.repo_id / model.sha
    try:
        folder = target.source.fetch(model, dest, max_bytes=opts.max_bytes)
    except Exception as e:  # noqa: BLE001 - the scan always goes on
        row.outcome, row.reason = classify_error(e), f"{type(e).__name__}: {e}"
        return row
    submitted = submit_kubernetes({"model": str(folder), "corpus": str(opts.corpus),
                                   "recipe": opts.recipe_name or "default"}, opts.backend_config)
    row.outcome, row.run_id = SUBMITTED, getattr(submitted, "run_id", "") or ""
    row.reason = f"kubernetes run {row.run_id}"
    return row


def _row_line(row: ScanRow) -> str:
    """One line per model: its outcome, domain and verdict, or why it has none (never cut mid-word)."""
    what = f"{row.domain or '-'} ({row.verdict}, confidence {row.confidence})" if row.verdict else row.reason
    if row.flags:
        what += f"; flags: {row.flags}"
    return f"{row.repo}@{row.sha[:8]}: {row.outcome}: {shorten(what, 160)}"


class _ModelBar:
    """A per-model progress bar with ETA; each finished model prints its line above it."""

    def __init__(self, total: int, enabled: bool):
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
