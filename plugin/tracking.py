"""The one MLflow seam: run start, finish and fail, the tag and metric schema, ledger queries.

Every other module logs through these functions; none imports ``mlflow``
itself (the evaluator and run-context entry points subclass MLflow's base
classes, which is all they take from it). Filter strings are only ever built
here, from validated or escaped values.
"""
from __future__ import annotations

import contextlib
import contextvars
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from plugin.core.search import SearchResult

TAG_PREFIX = "domain_finder."
# -- the tag schema -----------------------------------------------------------
T_MODEL_ID = TAG_PREFIX + "model_id"
T_REVISION = TAG_PREFIX + "revision"
T_SOURCE = TAG_PREFIX + "source"
T_STATUS = TAG_PREFIX + "status"  # queued | running | finished | failed
T_OUTCOME = TAG_PREFIX + "outcome"
T_ERROR = TAG_PREFIX + "error"
T_VERDICT = TAG_PREFIX + "verdict"
T_DOMAIN = TAG_PREFIX + "domain"
T_DOMAIN_SYNSET = TAG_PREFIX + "domain_synset"
T_SCAN = TAG_PREFIX + "scan"
T_DOC_SCORE = TAG_PREFIX + "documentation_score"
T_CHECK = TAG_PREFIX + "check."
PARENT_RUN = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

# -- outcomes: the values of T_OUTCOME and of a scan's summary rows ----------
INVESTIGATE = "investigate"
SKIPPED_DOCUMENTED = "skipped-documented"
SKIPPED_ENCODER = "skipped-encoder"
REFUSED_UNSAFE = "refused-unsafe"
FAILED_CORRUPT = "failed-corrupt"
FAILED = "failed"
ALREADY_AUDITED = "already-audited"
SUBMITTED = "submitted"
OUTCOMES = (INVESTIGATE, SKIPPED_DOCUMENTED, SKIPPED_ENCODER, REFUSED_UNSAFE, FAILED_CORRUPT)
DETERMINISTIC = (REFUSED_UNSAFE, FAILED_CORRUPT)  # verdicts about the files: not retried for the same sha
MAX_TAG = 5000


# -- who is investigated --------------------------------------------------------
@dataclass(frozen=True)
class ModelIdentity:
    """Who is being investigated; tagged on the run by the context provider."""

    model_id: str
    revision: str = ""
    sha256: dict = field(default_factory=dict, hash=False)
    source: str = "local"

    def tags(self) -> dict[str, str]:
        out = {T_MODEL_ID: self.model_id, T_REVISION: self.revision, T_SOURCE: self.source}
        for name, digest in sorted(self.sha256.items()):
            out[f"{TAG_PREFIX}sha256.{name}"] = digest
        return out


_ACTIVE: contextvars.ContextVar[ModelIdentity | None] = contextvars.ContextVar("domain_finder_identity", default=None)


def active_identity() -> ModelIdentity | None:
    """The model under investigation, if any (read by the run-context provider)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def investigating(identity: ModelIdentity) -> Iterator[None]:
    token = _ACTIVE.set(identity)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


# -- metrics and tags of a result ---------------------------------------------
def summary_metrics(result: SearchResult, seconds: float) -> dict[str, float]:
    f = result.findings
    return {
        "mean_functional_score": f.mean_functional_score,
        "found_fraction": f.found_fraction,
        "classes_found": float(sum(c.found for c in f.classes)),
        "queries": float(f.queries),
        "wall_time_s": seconds,
        "score_pass_time_s": result.scores.seconds,
    }


def verdict_tags(result: SearchResult) -> dict[str, str]:
    v = result.findings.verdict
    return {T_VERDICT: v.kind, T_DOMAIN: v.domain.name if v.domain else "",
            T_DOMAIN_SYNSET: v.domain.synset if v.domain else ""}


# -- runs -----------------------------------------------------------------------
def _mlflow():
    # Imported on first use: importing this module must stay cheap for the CLI's --help.
    import mlflow

    return mlflow


def client():
    return _mlflow().MlflowClient()


def tracking_uri() -> str:
    return _mlflow().get_tracking_uri()


def set_tracking_uri(uri: str) -> None:
    _mlflow().set_tracking_uri(uri)


def failure_tags(reason: str, outcome: str | None = None) -> dict[str, str]:
    """The tags every failed run carries: the reason, status ``failed`` and, if known, the outcome."""
    tags = {T_ERROR: reason[:MAX_TAG], T_STATUS: "failed"}
    if outcome:
        tags[T_OUTCOME] = outcome
    return tags


def fail_run(run_id: str, reason: str, outcome: str | None = None, *, status: str = "FAILED") -> None:
    """Ends ``run_id`` FAILED (or ``status``) with its reason, from outside the run."""
    c = client()
    for k, v in failure_tags(reason, outcome).items():
        c.set_tag(run_id, k, v)
    c.set_terminated(run_id, status)


@contextlib.contextmanager
def investigation_run(run_id: str | None, run_name: str | None, nested: bool):
    """Reuses the active run (evaluate, ``mlflow run``) or starts a new one.

    On an exception the run ends FAILED with the reason as a tag and an
    ``error.txt`` artifact, so nothing is lost.
    """
    mlflow = _mlflow()
    active = mlflow.active_run()
    owns = not (active and not nested and (run_id is None or active.info.run_id == run_id))
    run = mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested) if owns else active
    try:
        yield run
    except BaseException as e:
        mlflow.set_tags(failure_tags(f"{type(e).__name__}: {e}"))
        mlflow.log_text(traceback.format_exc(), "error.txt")
        if owns:
            mlflow.end_run(status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    else:
        if owns:
            mlflow.end_run()


@contextlib.contextmanager
def scan_run(source_spec: str):
    """The parent run of one scan."""
    mlflow = _mlflow()
    with mlflow.start_run(run_name=f"scan {source_spec}", tags={T_SCAN: "1", T_SOURCE: source_spec}) as run:
        yield run


def log_params(params: dict) -> None:
    _mlflow().log_params(params)


def log_metrics(metrics: dict) -> None:
    _mlflow().log_metrics(metrics)


def set_tags(tags: dict) -> None:
    _mlflow().set_tags(tags)


def log_text(text: str, name: str) -> None:
    _mlflow().log_text(text, name)


def log_artifacts(folder: str | Path) -> None:
    _mlflow().log_artifacts(str(folder))


def create_child_run(experiment_id: str, parent_id: str, name: str, tags: dict) -> str:
    return client().create_run(experiment_id, tags={PARENT_RUN: parent_id, RUN_NAME: name, **tags},
                               run_name=name).info.run_id


def get_run(run_id: str):
    return client().get_run(run_id)


def set_tag(run_id: str, key: str, value: str) -> None:
    client().set_tag(run_id, key, value[:MAX_TAG])


# -- ledger queries -----------------------------------------------------------
def _quote(value: str) -> str:
    """An MLflow filter-string literal; backslash and quote escaped."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def runs_of(experiment_id: str, repo_id: str, sha: str, *, running_only: bool = False, max_results: int = 100) -> list:
    """Runs tagged with ``(repo_id, sha)``, newest first."""
    q = f"tags.`{T_MODEL_ID}` = {_quote(repo_id)} and tags.`{T_REVISION}` = {_quote(sha)}"
    if running_only:
        q += " and attributes.status = 'RUNNING'"
    return client().search_runs([experiment_id], q, max_results=max_results)


def submit_project(project_uri: str | Path, entry_point: str, params: dict, *, backend: str,
                   backend_config: str | Path):
    """``mlflow.projects.run(..., synchronous=False)``; returns its ``SubmittedRun``."""
    import mlflow.projects

    return mlflow.projects.run(uri=str(project_uri), entry_point=entry_point, parameters=dict(params),
                               backend=backend, backend_config=str(backend_config), synchronous=False)
