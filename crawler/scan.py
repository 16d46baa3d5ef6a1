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

Outcomes (see :mod:`crawler.demo_hub`): ``investigate`` (done), ``already-audited``,
``skipped-encoder``, ``skipped-documented``, ``refused-unsafe``,
``failed-corrupt`` (a checkpoint error), ``failed`` (hub error, timeout, crash),
``submitted`` (kubernetes backend).
"""
from __future__ import annotations

import argparse
import csv
import io
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from crawler.cards import assess_documentation, is_classifier
from crawler.demo_hub import (FAILED_CORRUPT, INVESTIGATE, REFUSED_UNSAFE, SKIPPED_DOCUMENTED, SKIPPED_ENCODER)
from plugin.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from plugin.recipe import Recipe
from plugin.tracking import TAG_PREFIX

ALREADY_AUDITED = "already-audited"
FAILED = "failed"
SUBMITTED = "submitted"
DETERMINISTIC = (REFUSED_UNSAFE, FAILED_CORRUPT)  # verdicts about the files: not retried for the same sha
DEFAULT_MAX_BYTES = 2 * 2**30
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SUMMARY_COLUMNS = ("repo", "sha", "outcome", "domain", "classes_found", "queries", "seconds", "reason")

T_OUTCOME = TAG_PREFIX + "outcome"
T_ERROR = TAG_PREFIX + "error"


@dataclass
class ScanRow:
    repo: str
    sha: str
    outcome: str
    domain: str = ""
    classes_found: str = ""
    queries: str = ""
    seconds: float = 0.0
    reason: str = ""
    run_id: str = ""

    def cells(self) -> list[str]:
        return [self.repo, self.sha[:8], self.outcome, self.domain, self.classes_found, self.queries,
                f"{self.seconds:.1f}", self.reason]


@dataclass
class ScanReport:
    source: str
    run_id: str
    rows: list[ScanRow] = field(default_factory=list)
    seconds: float = 0.0

    def outcomes(self) -> dict[str, str]:
        return {r.repo: r.outcome for r in self.rows}

    def table(self) -> str:
        return markdown_table(self.rows)


def markdown_table(rows: list[ScanRow]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_csv(rows: list[ScanRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SUMMARY_COLUMNS)
    for r in rows:
        w.writerow(r.cells())
    return buf.getvalue()


def classify_error(e: BaseException) -> str:
    if isinstance(e, UnsafeCheckpointError):
        return REFUSED_UNSAFE
    if isinstance(e, CheckpointError):
        return FAILED_CORRUPT
    return FAILED


# --------------------------------------------------------------------------- ledger

def find_audit(client, experiment_id: str, repo_id: str, sha: str):
    """The earlier run that settles ``(repo_id, sha)``, or None (see the module docstring)."""
    q = repo_id.replace("'", "\\'")
    runs = client.search_runs([experiment_id], f"tags.`{TAG_PREFIX}model_id` = '{q}' and "
                                               f"tags.`{TAG_PREFIX}revision` = '{sha}'", max_results=100)
    for r in runs:
        if r.info.status == "FINISHED" and r.data.tags.get(TAG_PREFIX + "status") == "finished":
            return r
    for r in runs:
        if r.info.status == "FAILED" and r.data.tags.get(T_OUTCOME) in DETERMINISTIC:
            return r
    return None


def reap_stale_runs(client, experiment_id: str, repo_id: str, sha: str, timeout_s: float) -> int:
    """Ends as KILLED the RUNNING runs of ``(repo_id, sha)`` that a dead scan left behind.

    A run still RUNNING after ``timeout_s`` (plus a minute of slack) cannot
    belong to a live worker, which its own scan would have killed by then; so
    after a SIGKILL the store shows what happened instead of a run forever
    "running". Returns how many runs were reaped.
    """
    q = repo_id.replace("'", "\\'")
    runs = client.search_runs([experiment_id], f"tags.`{TAG_PREFIX}model_id` = '{q}' and "
                                               f"tags.`{TAG_PREFIX}revision` = '{sha}' and attributes.status = 'RUNNING'")
    now_ms = time.time() * 1000
    reaped = 0
    for r in runs:
        if now_ms - r.info.start_time > (timeout_s + 60) * 1000:
            client.set_tag(r.info.run_id, T_ERROR, "the scan that owned this run died before it finished")
            client.set_terminated(r.info.run_id, "KILLED")
            reaped += 1
    return reaped


# --------------------------------------------------------------------------- worker

def _watch_parent(ppid: int) -> None:
    while True:
        if os.getppid() != ppid:
            os._exit(3)  # the scan died; leave the run to be retried, never finish it behind its back
        time.sleep(0.5)


def _worker(tracking_uri: str, run_id: str, folder: str, corpus: str, recipe: Recipe, model_id: str,
            revision: str, source: str, ppid: int) -> None:
    """Runs in the spawned child: investigate into the run the parent created."""
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    import mlflow

    from plugin.investigate import identity_of, investigate

    mlflow.set_tracking_uri(tracking_uri)
    try:
        identity = identity_of(folder, model_id=model_id, revision=revision, source=source)
        investigate(folder, corpus, recipe, identity=identity, run_id=run_id, progress=False)
    except BaseException as e:
        client = mlflow.MlflowClient()
        client.set_tag(run_id, T_OUTCOME, classify_error(e))
        if mlflow.get_run(run_id).info.status == "RUNNING":  # failed before investigate's own handler
            client.set_tag(run_id, T_ERROR, f"{type(e).__name__}: {e}"[:5000])
            client.set_terminated(run_id, "FAILED")
        sys.exit(1)
    mlflow.MlflowClient().set_tag(run_id, T_OUTCOME, INVESTIGATE)


def _fail_run(client, run_id: str, reason: str, outcome: str) -> None:
    client.set_tag(run_id, T_ERROR, reason[:5000])
    client.set_tag(run_id, T_OUTCOME, outcome)
    client.set_tag(run_id, TAG_PREFIX + "status", "failed")
    client.set_terminated(run_id, "FAILED")


def run_isolated(client, run_id: str, folder: Path, corpus: str, recipe: Recipe, model_id: str, revision: str,
                 source: str, timeout_s: float) -> None:
    """Investigates in a spawned process; a timeout or crash ends the run FAILED from here."""
    import mlflow

    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_worker, args=(mlflow.get_tracking_uri(), run_id, str(folder), corpus, recipe,
                                          model_id, revision, source, os.getpid()), daemon=True)
    p.start()
    p.join(timeout_s)
    if p.is_alive():
        p.kill()
        p.join()
        _fail_run(client, run_id, f"TimeoutError: investigation took longer than {timeout_s:g} s; worker killed",
                  FAILED)
        return
    if client.get_run(run_id).info.status == "RUNNING":
        _fail_run(client, run_id, f"WorkerCrashed: worker exited with code {p.exitcode} without ending its run",
                  FAILED)


# --------------------------------------------------------------------------- kubernetes

def submit_kubernetes(params: dict, backend_config: str | Path, project_uri: str | Path = PROJECT_ROOT):
    """Submits one investigation as an MLflow Project run on Kubernetes (asynchronously).

    Calls ``mlflow.projects.run(uri=project_uri, entry_point="investigate",
    parameters=params, backend="kubernetes", backend_config=backend_config,
    synchronous=False)`` and returns its ``SubmittedRun``. The tests cannot
    reach a cluster, so they replace ``mlflow.projects.run`` with a stand-in
    and check the arguments passed here; nothing else is faked.
    """
    import mlflow.projects

    return mlflow.projects.run(uri=str(project_uri), entry_point="investigate", parameters=dict(params),
                               backend="kubernetes", backend_config=str(backend_config), synchronous=False)


# --------------------------------------------------------------------------- scan

def scan(source_spec: str, corpus: str = "demo", recipe: Recipe | str | None = None, *,
         include_documented: bool = False, max_bytes: int | None = DEFAULT_MAX_BYTES, timeout_s: float = 900,
         backend: str = "local", backend_config: str | Path | None = None, progress: bool = False,
         limit: int | None = None, source_options: dict | None = None, work_dir: str | Path | None = None,
         recipe_name: str | None = None) -> ScanReport:
    """Scans ``source_spec`` (``demo``, ``dir:PATH``, ``hf[:ENDPOINT]``) once; see the module docstring.

    Args:
        corpus: corpus name or folder, passed to each investigation.
        recipe: a Recipe, a recipe name/path, or None for the defaults.
        include_documented: also investigate models whose cards say what they are.
        max_bytes: refuse weights larger than this (None: no cap).
        timeout_s: kill one model's investigation after this many seconds.
        backend: ``local`` (spawned worker per model) or ``kubernetes``
            (:func:`submit_kubernetes`; needs ``backend_config``).
        limit: list at most this many models.
        source_options: extra options for the source (``author``, ``search``, ``endpoint``...).
        work_dir: kubernetes only: where fetched models are kept for the jobs
            (must be a volume the cluster can read); default a new temp folder.
        recipe_name: kubernetes only: the recipe name passed to the project.
    """
    import mlflow

    from crawler.sources import get_source

    if backend not in ("local", "kubernetes"):
        raise ConfigError(f"unknown backend {backend!r}; valid: local, kubernetes")
    if backend == "kubernetes" and not backend_config:
        raise ConfigError("--backend kubernetes needs --backend-config FILE")
    if isinstance(recipe, str) or recipe is None:
        recipe_name = recipe_name or (recipe if isinstance(recipe, str) else None)
        recipe = Recipe.load(recipe)
    client = mlflow.MlflowClient()
    t_scan = time.time()
    opts = dict(source_options or {})
    if limit is not None:
        opts["limit"] = limit
    report = ScanReport(source_spec, "")
    with get_source(source_spec, **opts) as source, \
            mlflow.start_run(run_name=f"scan {source_spec}",
                             tags={TAG_PREFIX + "scan": "1", TAG_PREFIX + "source": source_spec}) as parent:
        report.run_id = parent.info.run_id
        exp = parent.info.experiment_id
        mlflow.log_params({"scan.source": source_spec, "scan.corpus": str(corpus), "scan.backend": backend,
                           "scan.include_documented": include_documented, "scan.max_bytes": max_bytes,
                           "scan.timeout_s": timeout_s, "scan.limit": limit})
        mlflow.log_params({f"recipe.{k}": v for k, v in recipe.to_params().items()})
        for model in source.list_models():
            t0 = time.time()
            row = _scan_one(client, exp, parent.info.run_id, source, model, source_spec, corpus, recipe,
                            include_documented, max_bytes, timeout_s, backend, backend_config, work_dir, recipe_name)
            row.seconds = time.time() - t0
            report.rows.append(row)
            if progress:
                print(f"{row.repo}@{row.sha[:8]}: {row.outcome} {row.reason[:100]}", flush=True)
        report.seconds = time.time() - t_scan
        counts: dict[str, int] = {}
        for r in report.rows:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        mlflow.log_metrics({"scan.models": len(report.rows), "scan.seconds": report.seconds,
                            **{f"scan.{k}": v for k, v in counts.items()}})
        mlflow.log_text(summary_csv(report.rows), "scan_summary.csv")
        mlflow.log_text(report.table(), "scan_summary.md")
    print(report.table(), end="")
    return report


def _scan_one(client, exp: str, parent_id: str, source, model, source_spec: str, corpus: str, recipe: Recipe,
              include_documented: bool, max_bytes, timeout_s: float, backend: str, backend_config, work_dir,
              recipe_name) -> ScanRow:
    row = ScanRow(model.repo_id, model.sha or "", "")
    if model.config is not None and not is_classifier(model.config):
        row.outcome, row.reason = SKIPPED_ENCODER, "num_classes is 0 or config names no classes (a feature encoder)"
        return row
    doc = assess_documentation(model.card_text, model.config)
    if not doc.undocumented and not include_documented:
        row.outcome = SKIPPED_DOCUMENTED
        row.reason = (f"documentation score {doc.score:.2f}"
                      + (f"; datasets: {', '.join(doc.datasets)}" if doc.datasets else "")
                      + ("; " + "; ".join(doc.reasons) if doc.reasons else ""))
        return row
    prior = find_audit(client, exp, model.repo_id, model.sha)
    if prior is not None:
        row.outcome, row.run_id = ALREADY_AUDITED, prior.info.run_id
        row.domain = prior.data.tags.get(TAG_PREFIX + "domain", "")
        row.reason = f"run {prior.info.run_id[:8]} ({prior.data.tags.get(T_OUTCOME, INVESTIGATE)})"
        return row

    if backend == "kubernetes":
        dest = Path(work_dir or tempfile.mkdtemp(prefix="domain-finder-scan-")) / model.repo_id / model.sha
        try:
            folder = source.fetch(model, dest, max_bytes=max_bytes)
        except Exception as e:  # noqa: BLE001 - the scan always goes on
            row.outcome, row.reason = classify_error(e), f"{type(e).__name__}: {e}"
            return row
        submitted = submit_kubernetes({"model": str(folder), "corpus": str(corpus),
                                       "recipe": recipe_name or "default"}, backend_config)
        row.outcome, row.run_id = SUBMITTED, getattr(submitted, "run_id", "") or ""
        row.reason = f"kubernetes run {row.run_id}"
        return row

    reap_stale_runs(client, exp, model.repo_id, model.sha, timeout_s)
    tags = {"mlflow.parentRunId": parent_id, "mlflow.runName": model.repo_id,
            TAG_PREFIX + "model_id": model.repo_id, TAG_PREFIX + "revision": model.sha,
            TAG_PREFIX + "source": source_spec, TAG_PREFIX + "status": "queued",
            TAG_PREFIX + "documentation_score": f"{doc.score:.2f}"}
    run_id = client.create_run(exp, tags=tags, run_name=model.repo_id).info.run_id
    row.run_id = run_id
    tmp = tempfile.mkdtemp(prefix="domain-finder-scan-")
    try:
        try:
            folder = source.fetch(model, Path(tmp) / "model", max_bytes=max_bytes)
        except Exception as e:  # noqa: BLE001 - recorded on the child run; the scan goes on
            _fail_run(client, run_id, f"{type(e).__name__}: {e}", classify_error(e))
        else:
            run_isolated(client, run_id, folder, str(corpus), recipe, model.repo_id, model.sha, source_spec,
                         timeout_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run = client.get_run(run_id)
    t = run.data.tags
    if run.info.status == "FINISHED":
        row.outcome = INVESTIGATE
        row.domain = t.get(TAG_PREFIX + "domain", "") or t.get(TAG_PREFIX + "verdict", "")
        m = run.data.metrics
        params = run.data.params
        if "classes_found" in m:
            row.classes_found = f"{int(m['classes_found'])}/{params.get('model.num_classes', '?')}"
        if "queries" in m:
            row.queries = str(int(m["queries"]))
    else:
        row.outcome = t.get(T_OUTCOME, FAILED)
        row.reason = t.get(T_ERROR, f"run ended {run.info.status}")
    return row


# --------------------------------------------------------------------------- CLI

def add_scan_options(s: argparse.ArgumentParser) -> None:
    """The options shared by ``scan`` and ``schedule``."""
    s.add_argument("--source", required=True,
                   help="where to list models: demo, demo:PATH, dir:PATH (hub-layout folder), hf or hf:ENDPOINT")
    s.add_argument("--endpoint", default=None, help="Hub URL for --source hf (default: huggingface.co)")
    s.add_argument("--author", default=None, help="only models of this owner")
    s.add_argument("--search", default=None, help="only models whose name contains this")
    s.add_argument("--limit", type=int, default=None, help="list at most this many models")
    s.add_argument("--corpus", default="demo", help="corpus name or ImageNet-layout folder (default: demo)")
    s.add_argument("--recipe", default="demo", help="recipe YAML or a name in recipes/ (default: demo)")
    s.add_argument("--include-documented", action="store_true",
                   help="also investigate models whose card already says what data they were made for")
    s.add_argument("--timeout", type=float, default=900, help="kill one model's investigation after this many "
                                                              "seconds; its run ends FAILED (default: 900)")
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="refuse weights files larger than this many bytes (default: 2 GiB)")
    s.add_argument("--backend", choices=("local", "kubernetes"), default="local",
                   help="local: one isolated worker process per model; kubernetes: submit each model as an "
                        "MLflow Project run (needs --backend-config)")
    s.add_argument("--backend-config", default=None, help="kubernetes backend config JSON for mlflow run")
    s.add_argument("--work-dir", default=None,
                   help="kubernetes only: keep fetched models here (a volume the cluster can read)")
    s.add_argument("--no-progress", action="store_true", help="do not print one line per model")


def scan_kwargs(args) -> dict:
    opts = {k: getattr(args, k) for k in ("author", "search") if getattr(args, k, None)}
    spec = args.source
    if args.endpoint and spec == "hf":
        spec = f"hf:{args.endpoint}"
    return dict(source_spec=spec, corpus=args.corpus, recipe=args.recipe,
                include_documented=args.include_documented, max_bytes=args.max_bytes, timeout_s=args.timeout,
                backend=args.backend, backend_config=args.backend_config, progress=not args.no_progress,
                limit=args.limit, source_options=opts, work_dir=args.work_dir)


def cmd_scan(args) -> int:
    report = scan(**scan_kwargs(args))
    print(f"scan run {report.run_id}: {len(report.rows)} models in {report.seconds:.0f} s")
    print(f"open the runs with:\n  mlflow ui --backend-store-uri {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite:///mlflow.db')}")
    return 0


def add_scan_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``domain-finder scan`` to ``subparsers`` (sets ``func``)."""
    s = subparsers.add_parser(
        "scan", help="scan a model source; investigate each undocumented classifier once per revision",
        description="List models from a source, skip encoders and documented models, and investigate the rest "
                    "(one MLflow child run each under one scan run). Revisions already audited in the "
                    "tracking store are skipped, so rerunning a scan only does new work.")
    add_scan_options(s)
    s.set_defaults(func=cmd_scan)
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crawler.scan")
    sub = p.add_subparsers(dest="command", required=True)
    add_scan_parser(sub)
    args = p.parse_args(["scan", *(argv if argv is not None else sys.argv[1:])])
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
