"""One investigation = one MLflow run: validate, load, search, check, conclude, log. The I/O edge of the search.

Everything a user can get wrong (check names, auxiliary folders, ``--json``,
the corpus, the budget) is validated by :func:`plan_investigation` *before*
a run exists and before the first query, so bad input costs nothing.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from plugin import tracking
from plugin.artifacts import write_artifacts
from plugin.checks import CheckContext, CheckResult, get_check
from plugin.checks.base import answer_clause, reserved_queries, run_order, validate_options
from plugin.core.corpus import Corpus
from plugin.core.contradiction import index_contradiction_flag
from plugin.core.flags import label_contradiction_flag, with_flags
from plugin.core.errors import ConfigError, CorpusError, DomainFinderError
from plugin.core.recipe import Recipe
from plugin.core.scores import pass_queries
from plugin.core.search import SearchResult, search
from plugin.core.verdict import NO_DATASET_ORDER, conclude, format_domains
from plugin.corpora import get_corpus
from plugin.models import formats
from plugin.report import investigation_html, shorten
from plugin.tracking import T_CHECK, T_DOMAIN_SYNSET, T_STATUS, ModelIdentity, investigating
from plugin import view

TOOL = "mlflow-domain-finder"


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(TOOL)
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Investigation:
    result: SearchResult
    run_id: str
    seconds: float
    artifacts: list[Path]
    run_name: str = ""
    metrics: dict = field(default_factory=dict)  # the headline metrics logged on the run


@dataclass(frozen=True)
class Plan:
    """A validated investigation: what will run and what it will cost, known before the first query."""

    corpus: Corpus
    checks: tuple[str, ...]
    check_options: dict = field(hash=False)
    score_queries: int
    spec: str = ""  # the corpus as the user named it (a registered name or a folder)
    reserved: int = 0  # queries the checks' reserve hooks keep from the corpus pass (aux passes, generation)

    @property
    def queries(self) -> int:
        return self.score_queries + self.reserved


def load_blackbox(model: str | Path, recipe: Recipe):
    """The model folder as a hard-label black box, through the format its files and config name."""
    return formats.load_blackbox(model, batch_size=recipe.batch_size, budget=recipe.query_budget)


def identity_of(model: str | Path, model_id: str | None = None, revision: str = "", source: str = "local") -> ModelIdentity:
    return ModelIdentity(model_id or Path(model).name, revision, formats.file_hashes(model), source)


def check_writable(path: str | Path, what: str = "--json") -> None:
    """Raises ConfigError unless ``path`` can be written (tried for real, then removed if new)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a file name")
    existed = p.exists()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write there ({e.strerror or e})") from e
    if not existed:
        p.unlink(missing_ok=True)


def plan_investigation(corpus: str | Corpus, recipe: Recipe, checks: list[str] | None = None,
                       check_options: dict | None = None, json_out: str | Path | None = None,
                       progress: bool = False) -> Plan:
    """Validates an investigation before any run or query; raises a one-line DomainFinderError.

    Checks the check names and puts them in run order, runs every listed
    check's ``validate`` hook (the aux check loads its corpora there, so a bad
    folder fails here and is not loaded twice; the generative check checks its
    weight folders), the writability of ``json_out``, the corpus (exists,
    hierarchical) and the budget against the queries the plan needs, the
    checks' ``reserve`` hooks included (kept from the corpus pass).
    """
    names = tuple(dict.fromkeys([*recipe.checks, *(checks or [])]))
    for name in names:
        get_check(name)  # unknown names list the valid ones
    names = run_order(names)  # a check that reads another's result runs after it
    options = {k: dict(v) for k, v in recipe.check_options.items() if isinstance(v, dict)}
    for k, v in (check_options or {}).items():
        options[k] = {**options.get(k, {}), **v}
    for name in names:  # each check's own validate hook (aux loads its corpora here, once)
        checked = validate_options(name, options.get(name, {}), recipe)
        if checked or name in options:
            options[name] = checked
    reserved = {name: reserved_queries(name, options.get(name, {}), recipe) for name in names}
    if json_out:
        check_writable(json_out)
    if isinstance(corpus, Corpus):
        corpus_obj = corpus
    else:
        spec = str(corpus)
        try:
            corpus_obj = get_corpus(spec, progress=progress) if Path(spec).is_dir() else get_corpus(spec)
        except (OSError, ValueError) as e:
            if isinstance(e, DomainFinderError):
                raise
            raise CorpusError(f"corpus {spec}: cannot load it ({type(e).__name__}: {e})") from e
    if corpus_obj.hierarchy is None:
        raise CorpusError(f"corpus {corpus_obj.name!r} is flat; the search needs a hierarchical corpus "
                          "(flat corpora go to --aux)")
    score_queries = pass_queries(corpus_obj, recipe)
    plan = Plan(corpus_obj, names, options, score_queries,
                corpus_obj.name if isinstance(corpus, Corpus) else str(corpus), sum(reserved.values()))
    least = pass_queries(corpus_obj, recipe, least=True)
    if recipe.query_budget is not None and recipe.query_budget < least + plan.reserved:
        what = (f"the adaptive pass's first round ({least}: {recipe.adaptive_first_images} images per leaf)"
                if recipe.score_pass == "adaptive" else f"the exhaustive pass ({least})")
        extra = "".join(f" + {name} {q}" for name, q in reserved.items() if q)
        raise ConfigError(f"budget {recipe.query_budget} is below the {least + plan.reserved} queries "
                          f"this plan needs at least: {what}{extra}; raise --budget or lower images_per_leaf / "
                          "transforms_per_image")
    return plan


def corpus_digest(corpus: Corpus) -> str:
    """sha256 over the leaf list, image counts and each leaf's first image: cheap, and changes with the data."""
    h = hashlib.sha256(corpus.name.encode())
    for leaf in corpus.leaves:
        h.update(f"|{leaf.synset}:{len(leaf)}:{leaf.source}".encode())
        first = leaf.images[0]
        h.update(memoryview(first.tobytes() if hasattr(first, "tobytes") else bytes(first)))
    return h.hexdigest()


@dataclass
class _Stages:
    """What one investigation carries from stage to stage; each stage fills in its part."""

    plan: Plan
    recipe: Recipe
    identity: ModelIdentity
    recipe_name: str
    t0: float
    bb: object = None
    digest: str = ""
    result: SearchResult | None = None
    done: list = field(default_factory=list)  # the follow-up checks' results
    order: str | None = None  # the dataset order a dataset_index check identified
    seconds: float = 0.0
    headline: dict = field(default_factory=dict)
    names: list = field(default_factory=list)  # artifact paths, relative to the run's root


def investigate(model: str | Path, corpus: str | Corpus = "demo", recipe: Recipe | None = None, *,
                identity: ModelIdentity | None = None, json_out: str | Path | None = None, run_id: str | None = None,
                run_name: str | None = None, nested: bool = False, progress: bool = True,
                extra_tags: dict | None = None, checks: list[str] | None = None,
                check_options: dict | None = None, recipe_name: str | None = None,
                plan: Plan | None = None) -> Investigation:
    """Investigates one model folder and logs everything to MLflow: a short list of stages over a plan.

    Args:
        model: a model folder in any registered format (timm, transformers, ONNX).
        corpus: a registered corpus name, an ImageNet-layout path, or a Corpus.
        recipe: the knobs; defaults to :class:`Recipe`.
        identity: model id/revision/hashes; derived from the folder if omitted.
        json_out: also write ``findings.json`` here.
        run_id: log into this run (reused if already active).
        checks: follow-up checks to run besides ``recipe.checks``.
        check_options: per-check options merged over ``recipe.check_options``.
        recipe_name: the recipe's name or file, for the provenance block.
        plan: an already validated plan (else validated here, before the run).
    """
    recipe = recipe or Recipe()
    plan = plan or plan_investigation(corpus, recipe, checks, check_options, json_out, progress)
    identity = identity or identity_of(model)
    name = run_name or identity.model_id
    st = _Stages(plan, recipe, identity, recipe_name or "custom", time.time())
    with investigating(identity), tracking.investigation_run(run_id, name, nested) as run:
        tracking.set_tags({**identity.tags(), T_STATUS: "running", **(extra_tags or {})})
        st.bb = load_blackbox(model, recipe)
        _log_inputs(st)
        st.result = _search_with_progress(st.bb, plan.corpus, recipe, identity.model_id, progress,
                                          reserve=plan.reserved)
        bar = _StageBar([*plan.checks, "verdict", "artifacts", "report"], identity.model_id, progress)
        with tempfile.TemporaryDirectory() as tmp:
            _run_checks(st, Path(tmp), bar)
            bar.stage("verdict")
            _conclude(st, run.info.run_id)
            _write_outputs(st, Path(tmp), bar)
            bar.close()
            name = _tag_outcome(st, name)
        if json_out:
            st.result.findings.write(json_out)
        return Investigation(st.result, run.info.run_id, st.seconds, st.names, name, st.headline)


def _log_inputs(st: _Stages) -> None:
    """Headline params first, the recipe's knobs after them, and the corpus as the run's input dataset."""
    corpus, info, recipe = st.plan.corpus, st.bb.info, st.recipe
    st.digest = corpus_digest(corpus)
    images = sum(min(len(l), recipe.images_per_leaf) for l in corpus.leaves)
    tracking.log_params({"model.id": st.identity.model_id, "model.architecture": info.architecture,
                         "model.num_classes": info.num_classes, "corpus.name": corpus.name,
                         "corpus.digest": st.digest[:16], "recipe": st.recipe_name,
                         "queries.planned": st.plan.queries})
    tracking.log_params({"model.weights_file": info.weights_file,
                         "model.has_label_names": info.label_names is not None, "model.device": st.bb.device,
                         "corpus.leaves": len(corpus.leaves), "corpus.skipped_images": len(corpus.skipped)})
    tracking.log_params({f"recipe.{k}": v for k, v in recipe.to_params().items()})
    tracking.log_corpus_input(corpus.name, st.digest, st.plan.spec or corpus.name, leaves=len(corpus.leaves),
                              images=images)


def _run_checks(st: _Stages, tmp: Path, bar: "_StageBar") -> None:
    """The follow-up checks, their findings and metrics, and the one flag that needs the label names."""
    st.done = run_followups(list(st.plan.checks), st.bb, st.plan.corpus, st.result, st.recipe, st.bb.info,
                            st.identity.model_id, tmp, st.plan.check_options, on_start=bar.stage)
    for c in st.done:
        st.result.findings = st.result.findings.with_extra(c.name, {"applicable": c.applicable, "reason": c.reason,
                                                                    **c.summary} if not c.applicable else c.summary)
        tracking.log_metrics(c.metrics)
    labels = next((c for c in st.done if c.name == "label_similarity" and c.applicable), None)
    flag = label_contradiction_flag(labels.summary) if labels else None
    if flag:  # the one flag the search cannot raise alone: it needs the label names
        st.result.findings = with_flags(st.result.findings, [flag])
    index = next((c for c in st.done if c.name == "dataset_index" and c.applicable), None)
    flag = index_contradiction_flag(index.summary, st.result.findings.classes) if index else None
    if flag:  # the dataset_index check and the search disagree: say so
        st.result.findings = with_flags(st.result.findings, [flag])
    st.order = next((str(c.summary.get("verdict")) for c in st.done if c.name == "dataset_index" and c.applicable),
                    None)


def _conclude(st: _Stages, run_id: str) -> None:
    """The model-level verdict, the provenance block and the headline metrics."""
    corpus, identity = st.plan.corpus, st.identity
    st.seconds = time.time() - st.t0
    provenance = {"repo": identity.model_id, "revision": identity.revision, "source": identity.source,
                  "sha256": dict(identity.sha256), "tool": TOOL, "tool_version": tool_version(),
                  "corpus": corpus.name, "corpus_digest": st.digest, "recipe": st.recipe_name,
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mlflow_run_id": run_id}
    f = conclude(st.result.findings, corpus, st.recipe, st.order)
    clauses = [c for c in map(answer_clause, st.done) if c]  # e.g. which classes generation named
    if clauses:
        f = replace(f, verdict=replace(f.verdict, answer="; ".join([f.verdict.answer or f.verdict.kind, *clauses])))
    st.result.findings = f = replace(f, provenance=provenance)
    v = f.verdict
    st.headline = tracking.headline_metrics(classes_found=v.classes_found, num_classes=f.num_classes,
                                            found_fraction=f.found_fraction, confidence=v.confidence,
                                            queries_total=st.bb.num_queries)
    st.headline = view.rounded(st.headline)  # 3 significant digits: the runs table shows them uncut
    tracking.log_metrics({**st.headline, "stability": f.stability, "mean_functional_score": f.mean_functional_score,
                          "queries": float(f.queries), "wall_time_s": st.seconds,
                          "score_pass_time_s": st.result.scores.seconds})


def _write_outputs(st: _Stages, tmp: Path, bar: "_StageBar") -> None:
    """findings.json, classes.csv, the heatmap and montages, then report.html; all logged as artifacts."""
    bar.stage("artifacts")
    paths = write_artifacts(st.result, st.plan.corpus, tmp, st.recipe.montage_samples)
    bar.stage("report")
    checks_view = [(c.name, _check_text(c)) for c in st.done]
    html = investigation_html(st.result.findings, st.plan.corpus, st.result.classes, checks_view,
                              heatmap=tmp / "heatmap.png")
    (tmp / "report.html").write_text(html, encoding="utf-8")
    paths.append(tmp / "report.html")
    tracking.log_artifacts(str(tmp))
    tracking.log_class_table(st.result.findings.classes, st.bb.info.label_names)  # per-class rows, "view as table"
    st.names = [p.relative_to(tmp) for p in paths] + [p.relative_to(tmp) for c in st.done for p in c.artifacts]


def _tag_outcome(st: _Stages, name: str) -> str:
    """The headline tags, the flags, one tag per check, and the run's description; returns the run's name."""
    f = st.result.findings
    v = f.verdict
    dataset_order = st.order if st.order and st.order != NO_DATASET_ORDER else "none"
    domain = v.domain.name if v.domain else (format_domains(v.domains, 3) if v.kind == "several-domains" else "none")
    if name == st.identity.model_id:  # no name of the caller's: the run's name is the headline
        name = view.run_name(st.identity.model_id, outcome=tracking.INVESTIGATE, domain=domain, confidence=v.confidence)
    tracking.set_tags({**tracking.headline_tags(domain=view.short(domain, view.DOMAIN_CHARS), verdict=v.kind,
                                                outcome=tracking.INVESTIGATE, dataset_order=dataset_order),
                       T_DOMAIN_SYNSET: v.domain.synset if v.domain else "", T_STATUS: "finished",
                       **tracking.flag_tags(f), view.FLAGS_TAG: view.flag_kinds(f.flags), tracking.RUN_NAME: name,
                       **{f"{T_CHECK}{c.name}": _check_tag(c) for c in st.done}})
    tracking.describe_run(run_description(f, [(c.name, _check_text(c)) for c in st.done]))
    return name


def run_description(f, checks_view: list[tuple[str, str]]) -> str:
    """The run's Markdown description: the one-paragraph answer, then the checks."""
    v = f.verdict
    lines = [f"**{v.answer or v.kind}**", "",
             f"Confidence {v.confidence:.2f}; {v.classes_found} of {f.num_classes} classes found on corpus "
             f"`{f.corpus}` with {f.queries} queries."]
    if f.flags:
        lines.append("Flags: " + ", ".join(sorted({fl.kind for fl in f.flags})) + ".")
    if checks_view:
        lines += ["", *[f"- check `{n}`: {t}" for n, t in checks_view]]
    lines += ["", "See `report.html` for the per-class evidence and `findings.json` for everything."]
    return "\n".join(lines)


def _check_text(c) -> str:
    if not c.applicable:
        return f"not applicable: {c.reason}"
    return str(c.summary.get("verdict", "done"))


def _check_tag(c) -> str:
    return shorten(_check_text(c), 250)


def run_followups(names: list[str], bb, corpus: Corpus, result: SearchResult, recipe: Recipe, info, model_id: str,
                  out_dir: Path, extra_options: dict | None = None, on_start=None) -> list:
    """Runs the follow-up checks; a crashing check is recorded, never fatal.

    The search result is the investigation's main evidence, so one check's
    failure (a missing vectors file, a bad aux folder) must not lose it.
    ``extra_options`` replace the recipe's options per check (a validated
    plan's options already include the recipe's).
    """
    out, shared = [], {}  # shared: dropped with the checks, so a loaded generator never outlives them
    for name in names:
        check = get_check(name)  # unknown names fail fast, before any work
        extra = (extra_options or {}).get(name)
        # A plan's options replace the recipe's, not merge with them: the plan has already turned the
        # recipe's aux ``corpora`` into ``loaded`` corpora, and both together would list each one twice.
        options = dict(extra) if extra is not None else dict(recipe.check_options.get(name, {}))
        ctx = CheckContext(bb, corpus, result, recipe, info, options, out_dir, model_id, tuple(out), shared)
        if on_start:
            on_start(name)
        try:
            out.append(check(ctx))
        except Exception as e:  # noqa: BLE001 - recorded in findings.json and as a tag
            logging.getLogger(__name__).exception("check %s failed", name)
            out.append(CheckResult(name, False, {"error": f"{type(e).__name__}: {e}"}, reason=f"failed: {e}"))
    return out


class _StageBar:
    """One bar over the stages after the query pass (checks, verdict, artifacts, report)."""

    def __init__(self, stages: list[str], model_id: str, progress: bool):
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(stages), desc=f"after the queries {model_id}", unit="stage", leave=False)
        self.started = False

    def stage(self, name: str) -> None:
        if self.bar is None:
            return
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()


def _search_with_progress(bb, corpus: Corpus, recipe: Recipe, model_id: str, progress: bool,
                          reserve: int = 0) -> SearchResult:
    if not progress:
        return search(bb, corpus, recipe, model=model_id, reserve=reserve)
    from tqdm.auto import tqdm

    with tqdm(total=pass_queries(corpus, recipe), desc=f"querying {model_id}", unit="img", leave=False) as bar:
        return search(bb, corpus, recipe, model=model_id, progress=bar.update, reserve=reserve)

