"""The one MLflow seam: run start, finish and fail, the tag and metric schema, experiment and store set-up.

Every other module logs through these functions; none imports ``mlflow``
itself (the evaluator and run-context entry points subclass MLflow's base
classes, which is all they take from it). The scan's vocabulary is in
:mod:`plugin.outcomes`, and the ledger's queries are in
:mod:`crawler.scan.ledger`, which builds its filter strings from validated
or escaped values only.
"""
from __future__ import annotations

import contextlib
import contextvars
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# The scan vocabulary lives in plugin.outcomes; these names are re-exported for the modules that read them
# here (plugin.demo.hub, crawler.hub, tests).
from plugin.outcomes import (ALREADY_AUDITED, CATEGORIES, CRASH, DETERMINISTIC, FAILED, FAILED_CORRUPT,  # noqa: F401
                             HUB_ERROR, INVALID_REPO, INVESTIGATE, OUTCOMES, PERMANENT, REFUSED_UNSAFE, RESOURCE_LIMIT,
                             SKIPPED_DOCUMENTED, SKIPPED_ENCODER, TAG_PREFIX, TIMEOUT, TRANSIENT, failure_category)
from plugin import view
# -- the tag schema -----------------------------------------------------------
T_MODEL_ID = TAG_PREFIX + "model_id"
T_REVISION = TAG_PREFIX + "revision"
T_SOURCE = TAG_PREFIX + "source"
T_STATUS = TAG_PREFIX + "status"  # queued | running | finished | failed
# Headline tags: short, unprefixed keys so the runs table shows them as readable columns.
T_OUTCOME = "outcome"
T_VERDICT = "verdict"
T_DOMAIN = "domain"
T_DATASET_ORDER = "dataset_order"
T_ERROR = TAG_PREFIX + "error"
T_DOMAIN_SYNSET = TAG_PREFIX + "domain_synset"
T_SCAN = TAG_PREFIX + "scan"
T_DOC_SCORE = TAG_PREFIX + "undocumented_score"  # 1.0: the card says nothing (crawler.cards)
T_CHECK = TAG_PREFIX + "check."
T_FLAGS = TAG_PREFIX + "flags"  # comma list of flag kinds ("decoy-suspected,mixed-domains"); "" when none
T_FLAG = TAG_PREFIX + "flag."  # + kind: the flagged classes, "0,1,2"
PARENT_RUN = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"  # the Markdown description MLflow shows on a run or an experiment
# The same headline metrics on every run, zeros on refused and failed ones, so compare never shows NaN.
HEADLINE_METRICS = ("classes_found", "num_classes", "found_fraction", "confidence", "queries_total")
DEFAULT_EXPERIMENT = "domain-finder"
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_DESCRIPTION = (
    "**domain-finder**: one run per investigated model (corpus-based domain search on a hard-label black box), "
    "one parent run per hub scan.\n\n"
    "Headline columns: tags `domain`, `verdict`, `outcome`, `dataset_order`; metrics `classes_found`, "
    "`num_classes`, `found_fraction`, `confidence`, `queries_total`. Each run carries `report.html` and "
    "`findings.json` (its summary block first).")

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


# -- tags of a result ------------------------------------------------------------
def flag_tags(findings) -> dict[str, str]:
    """``T_FLAGS`` (the kinds, for filtering and the scan summary) and one ``T_FLAG<kind>`` per kind (its classes)."""
    kinds = list(dict.fromkeys(f.kind for f in findings.flags))
    out = {T_FLAGS: ",".join(kinds)}
    for kind in kinds:
        classes = sorted({c for f in findings.flags if f.kind == kind for c in f.classes})
        out[T_FLAG + kind] = ",".join(map(str, classes))[:MAX_TAG]
    return out


def flags_of_tags(tags: dict[str, str]) -> str:
    """A run's flags as one cell, in ``flag_summary``'s form: ``"decoy-suspected[0,1],sink-class[2]"``; "" if none."""
    kinds = [k for k in (tags.get(T_FLAGS) or "").split(",") if k]
    return ",".join(f"{k}[{tags.get(T_FLAG + k, '')}]" for k in kinds)


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
    """The tags every failed run carries: the reason, status ``failed``, the headline tags and a description.

    Every tag a running investigation set that could now mislead (status,
    verdict, domain) is overwritten, so a failed run never shows stale values.
    """
    outcome = outcome or FAILED
    return {T_ERROR: reason[:MAX_TAG], T_STATUS: "failed",
            **headline_tags(domain="none", verdict=outcome, outcome=outcome, dataset_order="none"),
            NOTE: f"**{outcome}**: {reason[:2000]}\n\nNo search ran, so the headline metrics are zero."}


def headline_tags(*, domain: str, verdict: str, outcome: str, dataset_order: str) -> dict[str, str]:
    """The four short tags every run carries, failed ones included."""
    return {T_DOMAIN: domain or "none", T_VERDICT: verdict, T_OUTCOME: outcome,
            T_DATASET_ORDER: dataset_order or "none"}


def headline_metrics(**values: float) -> dict[str, float]:
    """``HEADLINE_METRICS``, zero where not given (refused and failed runs)."""
    unknown = set(values) - set(HEADLINE_METRICS)
    if unknown:
        raise KeyError(f"not headline metrics: {sorted(unknown)}")
    return {k: float(values.get(k, 0.0)) for k in HEADLINE_METRICS}


def fail_run(run_id: str, reason: str, outcome: str | None = None, *, status: str = "FAILED") -> None:
    """Ends ``run_id`` FAILED (or ``status``) with its reason, headline tags and zero metrics, from outside."""
    from mlflow.entities import Metric, RunTag
    import time as _time

    c = client()
    now = int(_time.time() * 1000)
    data = c.get_run(run_id).data
    existing, name = data.metrics, view.run_name(data.tags.get(T_MODEL_ID, "?"), outcome=outcome or FAILED)
    tags = {**failure_tags(reason, outcome), RUN_NAME: name}
    c.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in headline_metrics().items() if k not in existing],
                tags=[RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()])
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
    if run_name and not owns:  # evaluate() and `mlflow run` name the run as the CLI does
        mlflow.set_tag(RUN_NAME, run_name)
    try:
        yield run
    except BaseException as e:
        who = active_identity()
        mlflow.set_tags({**failure_tags(f"{type(e).__name__}: {e}", failure_category(e)), **({RUN_NAME: view.run_name(
            who.model_id, outcome=failure_category(e))} if who and run_name == who.model_id else {})})
        existing = mlflow.get_run(run.info.run_id).data.metrics
        mlflow.log_metrics({k: v for k, v in headline_metrics().items() if k not in existing})
        mlflow.log_text(traceback.format_exc(), "error.txt")
        if owns:
            mlflow.end_run(status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    else:
        if owns:
            mlflow.end_run()


def use_experiment(name: str | None = None) -> str | None:
    """Makes ``name`` (default: $MLFLOW_EXPERIMENT_NAME, else ``domain-finder``) the active experiment.

    Created with a Markdown description on first use. Inside ``mlflow run``
    (``MLFLOW_RUN_ID`` set) the project's run decides the experiment, so
    this does nothing and returns None.
    """
    import os

    if os.environ.get("MLFLOW_RUN_ID"):
        return None
    init_store()  # set_experiment creates the schema of a fresh store: never two processes at once
    mlflow = _mlflow()
    exp = mlflow.set_experiment(name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    if NOTE not in exp.tags:  # with a link to the shared headline view (columns picked, failures first)
        client().set_experiment_tag(exp.experiment_id, NOTE, EXPERIMENT_DESCRIPTION + "\n\n[Open the headline view]("
                                    + view.view_url("", exp.experiment_id) + "), [compare the headline metrics]("
                                    + view.view_url("", exp.experiment_id, charts=True) + ").")
    if exp.tags.get(view.VIEW_TAG) != view.view_state():
        client().set_experiment_tag(exp.experiment_id, view.VIEW_TAG, view.view_state())
    if EXPERIMENT_KIND not in exp.tags:  # the UI then opens on the runs table, not the GenAI overview
        client().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, "custom_model_development")
    return exp.experiment_id


@contextlib.contextmanager
def experiment(name: str | None = None, *, keep_active: bool = False) -> Iterator[str | None]:
    """:func:`use_experiment` for the duration of one command, then the previous active experiment again.

    MLflow keeps the active experiment in a module global and in
    ``$MLFLOW_EXPERIMENT_ID``; restoring both keeps a library caller (or the
    next test, on another store) from inheriting an experiment id it lacks.
    With ``keep_active`` and no ``name``, an experiment the caller already
    made active (``mlflow.set_experiment``, ``$MLFLOW_EXPERIMENT_ID``) is kept.
    """
    import os

    from mlflow.tracking import fluent

    prev_id, prev_env = getattr(fluent, "_active_experiment_id", None), os.environ.get("MLFLOW_EXPERIMENT_ID")
    try:
        active = prev_id or prev_env
        yield active if keep_active and name is None and active else use_experiment(name)
    finally:
        fluent._active_experiment_id = prev_id
        if prev_env is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = prev_env


def describe_run(markdown: str) -> None:
    """The active run's description (``mlflow.note.content``), shown above its details in the UI."""
    _mlflow().set_tag(NOTE, markdown[:8000])


def log_corpus_input(name: str, digest: str, location: str, *, leaves: int, images: int) -> None:
    """Logs the corpus as the run's input dataset (the runs table's Dataset column)."""
    mlflow = _mlflow()
    from mlflow.data.meta_dataset import MetaDataset

    path = Path(location)
    if path.exists():
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        source = resolve_dataset_source(str(path.resolve()))
    else:  # a registered corpus name: the code that builds it is the source
        from mlflow.data.code_dataset_source import CodeDatasetSource

        source = CodeDatasetSource({"corpus": location, "loader": "plugin.corpora.get_corpus"})
    mlflow.log_input(MetaDataset(source, name=name, digest=digest[:16]), context="corpus",
                     tags={"leaves": str(leaves), "images": str(images)})


@contextlib.contextmanager
def scan_run(source_spec: str):
    """The parent run of one scan."""
    mlflow = _mlflow()
    with mlflow.start_run(run_name=f"scan {source_spec}", tags={T_SCAN: "1", T_SOURCE: source_spec}) as run:
        yield run


def log_params(params: dict) -> None:
    _mlflow().log_params(params)


def log_metrics(metrics: dict) -> None:
    """Logs ``metrics`` at 3 significant digits (counts exact): the UI shows them uncut; findings.json keeps all."""
    _mlflow().log_metrics(view.rounded(metrics))


def set_tags(tags: dict) -> None:
    _mlflow().set_tags(tags)


def log_text(text: str, name: str) -> None:
    _mlflow().log_text(text, name)


def log_class_table(classes, labels=None, name: str = "classes.json") -> None:
    """The per-class rows (:func:`plugin.view.class_table`) as an MLflow table; ``mlflow.load_table`` reads it back.

    Measured in MLflow 3.17 (mlflow server + chromium): the run gets the tag
    ``mlflow.loggedArtifacts`` and Artifacts shows ``classes.json`` "as table";
    the experiment's landing page, its GenAI "Evaluation runs" list and the
    headline view look the same as without it.
    """
    _mlflow().log_table(view.class_table(classes, labels), artifact_file=name)


def log_artifacts(folder: str | Path) -> None:
    _mlflow().log_artifacts(str(folder))


def create_child_run(experiment_id: str, parent_id: str, name: str, tags: dict) -> str:
    return client().create_run(experiment_id, tags={PARENT_RUN: parent_id, RUN_NAME: name, **tags},
                               run_name=name).info.run_id


def artifact_uri(run_id: str, path: str) -> str:
    """The URI of one artifact of ``run_id``."""
    return _mlflow().get_artifact_uri(path) if _active_is(run_id) else \
        f"{client().get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"


def _active_is(run_id: str) -> bool:
    active = _mlflow().active_run()
    return bool(active and active.info.run_id == run_id)


def get_run(run_id: str):
    return client().get_run(run_id)


def set_tag(run_id: str, key: str, value: str) -> None:
    client().set_tag(run_id, key, value[:MAX_TAG])


def search_runs(experiment_id: str, filter_string: str, max_results: int = 1000) -> list:
    """Runs of ``experiment_id`` matching ``filter_string`` (built by the caller from validated values)."""
    return client().search_runs([experiment_id], filter_string, max_results=max_results)


def set_run_tags(run_id: str, tags: dict) -> None:
    """Sets tags on ``run_id`` from outside the run (values truncated to MLflow's limit)."""
    c = client()
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v)[:MAX_TAG])


def delete_run(run_id: str) -> None:
    """Ends ``run_id`` KILLED, then soft-deletes it (a claim that lost a race); searches no longer return it.

    A deleted run keeps its status: deleted while RUNNING, it would stay RUNNING in the store for good.
    """
    c = client()
    c.set_terminated(run_id, "KILLED")
    c.delete_run(run_id)


def init_store() -> None:
    """Creates the tracking store once, before any worker: concurrent first uses of one SQLite file race.

    For a ``sqlite:`` store, the first query (which creates MLflow's schema)
    runs under an exclusive lock file beside the database, so a second scan
    starting at the same moment waits for the first instead of failing.
    """
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        client().search_experiments(max_results=1)
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(str(db) + ".init-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client().search_experiments(max_results=1)
            mlf = _mlflow()
            if mlf.get_experiment_by_name("Default") is None:
                client().search_runs(["0"], max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def mlflow_server(store_uri: str, log: str | Path, *, artifacts: str | Path | None = None,
                  port: int = 0) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 over ``store_uri`` for the duration; yields its base URL (``/`` end).

    ``artifacts``: a folder the server proxies new runs' artifacts to
    (``--serve-artifacts``); without it runs keep the artifact location their
    store recorded (a local ``mlruns/`` folder, as ``make demo`` writes). Port
    0 picks a free one. Used by the browser tests and ``make screenshots``.
    """
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", store_uri]
    if artifacts is not None:
        cmd += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
    base = f"http://127.0.0.1:{port}/"
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {Path(log).read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
