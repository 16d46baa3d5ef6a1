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
``skipped-encoder``, ``skipped-documented``, ``refused-unsafe``,
``failed-corrupt`` (a checkpoint error), ``failed`` (hub error, timeout, crash),
``submitted`` (kubernetes backend).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from crawler.cards import assess_documentation
from crawler.scan.backends import run_isolated, submit_kubernetes
from crawler.scan.ledger import classify_error, find_audit, reap_stale_runs
from crawler.scan.options import ScanOptions
from crawler.scan.report import ScanReport, ScanRow, summary_csv
from crawler.sources import HubModel, ModelSource, get_source
from plugin import tracking
from plugin.core.recipe import Recipe
from plugin.models.hub_layout import is_classifier
from plugin.tracking import (ALREADY_AUDITED, FAILED, INVESTIGATE, SKIPPED_DOCUMENTED, SKIPPED_ENCODER, SUBMITTED,
                             T_DOC_SCORE, T_DOMAIN, T_ERROR, T_MODEL_ID, T_OUTCOME, T_REVISION, T_SOURCE, T_STATUS,
                             T_VERDICT)


def scan(source_spec: str, corpus: str = "demo", recipe: Recipe | str | None = None, **options) -> ScanReport:
    """Scans ``source_spec`` (``demo``, ``dir:PATH``, ``hf[:ENDPOINT]``) once; see the module docstring.

    Args:
        source_spec: where to list models (see :func:`crawler.sources.get_source`).
        corpus: corpus name or folder, passed to each investigation.
        recipe: a Recipe, a recipe name/path, or None for the defaults.
        **options: the other fields of :class:`ScanOptions`.
    """
    return run_scan(source_spec, ScanOptions.build(recipe, corpus=corpus, **options))


def run_scan(source_spec: str, opts: ScanOptions) -> ScanReport:
    """Scans ``source_spec`` once with validated options."""
    t_scan = time.time()
    source_opts = dict(opts.source_options)
    if opts.limit is not None:
        source_opts["limit"] = opts.limit
    report = ScanReport(source_spec, "")
    with get_source(source_spec, **source_opts) as source, tracking.scan_run(source_spec) as parent:
        report.run_id = parent.info.run_id
        exp = parent.info.experiment_id
        tracking.log_params({"scan.source": source_spec, **opts.params()})
        tracking.log_params({f"recipe.{k}": v for k, v in opts.recipe.to_params().items()})
        for model in source.list_models():
            t0 = time.time()
            row = _scan_one(_Target(exp, parent.info.run_id, source, source_spec), model, opts)
            row.seconds = time.time() - t0
            report.rows.append(row)
            if opts.progress:
                print(f"{row.repo}@{row.sha[:8]}: {row.outcome} {row.reason[:100]}", flush=True)
        report.seconds = time.time() - t_scan
        counts: dict[str, int] = {}
        for r in report.rows:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        tracking.log_metrics({"scan.models": len(report.rows), "scan.seconds": report.seconds,
                              **{f"scan.{k}": v for k, v in counts.items()}})
        tracking.log_text(summary_csv(report.rows), "scan_summary.csv")
        tracking.log_text(report.table(), "scan_summary.md")
    print(report.table(), end="")
    return report


@dataclass(frozen=True)
class _Target:
    """Where a scan's child runs go: the experiment, the parent run and the source."""

    experiment_id: str
    parent_id: str
    source: ModelSource
    source_spec: str


def _triage(model: HubModel, opts: ScanOptions) -> ScanRow | None:
    """A row for a model the scan skips without a run (encoder, documented), else None."""
    row = ScanRow(model.repo_id, model.sha or "", "")
    if model.config is not None and not is_classifier(model.config):
        row.outcome, row.reason = SKIPPED_ENCODER, "num_classes is 0 or config names no classes (a feature encoder)"
        return row
    doc = assess_documentation(model.card_text, model.config)
    if not doc.undocumented and not opts.include_documented:
        row.outcome = SKIPPED_DOCUMENTED
        row.reason = (f"documentation score {doc.score:.2f}"
                      + (f"; datasets: {', '.join(doc.datasets)}" if doc.datasets else "")
                      + ("; " + "; ".join(doc.reasons) if doc.reasons else ""))
        return row
    return None


def _scan_one(target: _Target, model: HubModel, opts: ScanOptions) -> ScanRow:
    skipped = _triage(model, opts)
    if skipped is not None:
        return skipped
    row = ScanRow(model.repo_id, model.sha or "", "")
    prior = find_audit(target.experiment_id, model.repo_id, model.sha)
    if prior is not None:
        row.outcome, row.run_id = ALREADY_AUDITED, prior.info.run_id
        row.domain = prior.data.tags.get(T_DOMAIN, "")
        row.reason = f"run {prior.info.run_id[:8]} ({prior.data.tags.get(T_OUTCOME, INVESTIGATE)})"
        return row
    if opts.backend == "kubernetes":
        return _submit(target, model, opts, row)

    reap_stale_runs(target.experiment_id, model.repo_id, model.sha, opts.timeout_s)
    doc = assess_documentation(model.card_text, model.config)
    run_id = tracking.create_child_run(target.experiment_id, target.parent_id, model.repo_id, {
        T_MODEL_ID: model.repo_id, T_REVISION: model.sha, T_SOURCE: target.source_spec, T_STATUS: "queued",
        T_DOC_SCORE: f"{doc.score:.2f}"})
    row.run_id = run_id
    tmp = tempfile.mkdtemp(prefix="domain-finder-scan-")
    try:
        try:
            folder = target.source.fetch(model, Path(tmp) / "model", max_bytes=opts.max_bytes)
        except Exception as e:  # noqa: BLE001 - recorded on the child run; the scan goes on
            tracking.fail_run(run_id, f"{type(e).__name__}: {e}", classify_error(e))
        else:
            run_isolated(run_id, folder, str(opts.corpus), opts.recipe, model.repo_id, model.sha, target.source_spec,
                         opts.timeout_s)
    finally:
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


def _row_of_run(row: ScanRow, run) -> ScanRow:
    t = run.data.tags
    if run.info.status == "FINISHED":
        row.outcome = INVESTIGATE
        row.domain = t.get(T_DOMAIN, "") or t.get(T_VERDICT, "")
        m = run.data.metrics
        if "classes_found" in m:
            row.classes_found = f"{int(m['classes_found'])}/{run.data.params.get('model.num_classes', '?')}"
        if "queries" in m:
            row.queries = str(int(m["queries"]))
    else:
        row.outcome = t.get(T_OUTCOME, FAILED)
        row.reason = t.get(T_ERROR, f"run ended {run.info.status}")
    return row
