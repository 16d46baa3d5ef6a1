"""One investigation = one MLflow run: load, search, log. The I/O edge of the search."""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from plugin.core.corpus import Corpus
from plugin.corpora import get_corpus
from plugin.core.recipe import Recipe
from plugin.core.search import SearchResult, search
from plugin import tracking
from plugin.artifacts import write_artifacts
from plugin.checks import CheckContext, CheckResult, get_check
from plugin.models.checkpoint import inspect_checkpoint
from plugin.models.torch_blackbox import TorchBlackBox
from plugin.tracking import T_CHECK, T_STATUS, ModelIdentity, investigating, summary_metrics, verdict_tags


@dataclass
class Investigation:
    result: SearchResult
    run_id: str
    seconds: float
    artifacts: list[Path]


def load_blackbox(model: str | Path, recipe: Recipe) -> TorchBlackBox:
    return TorchBlackBox.from_folder(model, batch_size=recipe.batch_size, budget=recipe.query_budget)


def identity_of(model: str | Path, model_id: str | None = None, revision: str = "", source: str = "local") -> ModelIdentity:
    info = inspect_checkpoint(model)
    return ModelIdentity(model_id or Path(model).name, revision, dict(info.sha256), source)


def investigate(model: str | Path, corpus: str | Corpus = "demo", recipe: Recipe | None = None, *,
                identity: ModelIdentity | None = None, json_out: str | Path | None = None, run_id: str | None = None,
                run_name: str | None = None, nested: bool = False, progress: bool = True,
                extra_tags: dict | None = None, checks: list[str] | None = None,
                check_options: dict | None = None) -> Investigation:
    """Investigates one checkpoint folder and logs everything to MLflow.

    Args:
        model: a timm hub-layout folder.
        corpus: a registered corpus name, an ImageNet-layout path, or a Corpus.
        recipe: the knobs; defaults to :class:`Recipe`.
        identity: model id/revision/hashes; derived from the folder if omitted.
        json_out: also write ``findings.json`` here.
        run_id: log into this run (reused if already active).
        checks: follow-up checks to run besides ``recipe.checks``.
        check_options: per-check options merged over ``recipe.check_options``.
    """
    recipe = recipe or Recipe()
    identity = identity or identity_of(model)
    t0 = time.time()
    with investigating(identity), tracking.investigation_run(run_id, run_name or identity.model_id, nested) as run:
        tracking.set_tags({**identity.tags(), T_STATUS: "running", **(extra_tags or {})})
        tracking.log_params({f"recipe.{k}": v for k, v in recipe.to_params().items()})
        bb = load_blackbox(model, recipe)
        info = bb.info
        corpus_obj = corpus if isinstance(corpus, Corpus) else get_corpus(str(corpus))
        tracking.log_params({"model.id": identity.model_id, "model.architecture": info.architecture,
                           "model.num_classes": info.num_classes, "model.weights_file": info.weights_file,
                           "model.has_label_names": info.label_names is not None, "model.device": bb.device,
                           "corpus.name": corpus_obj.name, "corpus.leaves": len(corpus_obj.leaves),
                           "corpus.skipped_images": len(corpus_obj.skipped)})
        result = _search_with_progress(bb, corpus_obj, recipe, identity.model_id, progress)
        with tempfile.TemporaryDirectory() as tmp:
            checks = run_followups(list(recipe.checks) + [c for c in (checks or []) if c not in recipe.checks],
                                   bb, corpus_obj, result, recipe, info, identity.model_id, Path(tmp), check_options)
            for c in checks:
                result.findings = result.findings.with_extra(c.name, {"applicable": c.applicable, "reason": c.reason,
                                                                      **c.summary} if not c.applicable else c.summary)
                tracking.log_metrics(c.metrics)
            seconds = time.time() - t0
            tracking.log_metrics({**summary_metrics(result, seconds), "total_queries": float(bb.num_queries)})
            tracking.set_tags({**verdict_tags(result), T_STATUS: "finished",
                               **{f"{T_CHECK}{c.name}": _check_tag(c) for c in checks}})
            paths = write_artifacts(result, corpus_obj, Path(tmp), recipe.montage_samples)
            tracking.log_artifacts(tmp)
            names = [p.relative_to(tmp) for p in paths] + [p.relative_to(tmp) for c in checks for p in c.artifacts]
        if json_out:
            result.findings.write(json_out)
        return Investigation(result, run.info.run_id, seconds, names)


def _check_tag(c) -> str:
    if not c.applicable:
        return f"not applicable: {c.reason}"[:250]
    return str(c.summary.get("verdict", "done"))[:250]


def run_followups(names: list[str], bb, corpus: Corpus, result: SearchResult, recipe: Recipe, info, model_id: str,
                  out_dir: Path, extra_options: dict | None = None) -> list:
    """Runs the follow-up checks; a crashing check is recorded, never fatal.

    The search result is the investigation's main evidence, so one check's
    failure (a missing vectors file, a bad aux folder) must not lose it.
    """
    out = []
    for name in names:
        check = get_check(name)  # unknown names fail fast, before any work
        options = {**recipe.check_options.get(name, {}), **(extra_options or {}).get(name, {})}
        ctx = CheckContext(bb, corpus, result, recipe, info, options, out_dir, model_id)
        try:
            out.append(check(ctx))
        except Exception as e:  # noqa: BLE001 - recorded in findings.json and as a tag
            logging.getLogger(__name__).exception("check %s failed", name)
            out.append(CheckResult(name, False, {"error": f"{type(e).__name__}: {e}"}, reason=f"failed: {e}"))
    return out


def _search_with_progress(bb, corpus: Corpus, recipe: Recipe, model_id: str, progress: bool) -> SearchResult:
    if not progress:
        return search(bb, corpus, recipe, model=model_id)
    from tqdm.auto import tqdm

    total = sum(min(len(l), recipe.images_per_leaf) for l in corpus.leaves) * recipe.copies_per_image
    with tqdm(total=total, desc=f"querying {model_id}", unit="img", leave=False) as bar:
        return search(bb, corpus, recipe, model=model_id, progress=bar.update)
