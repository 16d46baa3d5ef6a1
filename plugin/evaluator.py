"""MLflow ``model_evaluator`` entry point: a thin adapter over :func:`investigate`.

Usage::

    mlflow.models.evaluate(data=pd.DataFrame({"model": [folder]}), model_type="domain-finder",
                           evaluators=["domain-finder"],
                           evaluator_config={"domain-finder": {"model": folder, "corpus": "demo", "recipe": "demo"}})

Parity with the CLI: the same run name (the model id), the same metric keys
(the run's headline metrics, unprefixed) and ``res.artifacts`` naming every
file logged on the run.
"""
from __future__ import annotations

from pathlib import Path

from mlflow.models.evaluation import ModelEvaluator
from mlflow.models.evaluation.artifacts import (CsvEvaluationArtifact, ImageEvaluationArtifact,
                                                JsonEvaluationArtifact, TextEvaluationArtifact)
from mlflow.models.evaluation.base import EvaluationResult

from plugin import tracking
from plugin.core.errors import ConfigError
from plugin.core.recipe import Recipe
from plugin.investigate import identity_of, investigate

MODEL_TYPE = "domain-finder"
USAGE = ('evaluator_config={"domain-finder": {"model": "<hub-layout folder>", "corpus": "demo", '
         '"recipe": "demo"}}')
_ARTIFACT_TYPES = {".json": JsonEvaluationArtifact, ".png": ImageEvaluationArtifact, ".csv": CsvEvaluationArtifact}


def resolve_model_folder(model) -> Path:
    """A model folder, relative paths resolved against the working directory; the error names where it looked."""
    if not isinstance(model, (str, Path)) or not str(model).strip():
        raise ConfigError(f"evaluator_config 'model' must be a folder path, got {model!r}; {USAGE}")
    p = Path(model).expanduser()
    resolved = p if p.is_absolute() else (Path.cwd() / p)
    if not resolved.is_dir():
        raise ConfigError(f"model folder {str(model)!r} not found (looked for {resolved.resolve()})")
    return resolved.resolve()


class DomainFinderEvaluator(ModelEvaluator):
    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        # Strict on the model type, since MLflow runs every evaluator that says yes. A missing
        # config is accepted here so that evaluate() can say what is missing instead of MLflow's
        # generic "no evaluator could evaluate".
        return model_type == MODEL_TYPE

    def evaluate(self, *, model_type, dataset, run_id, evaluator_config, model=None, **kwargs):
        cfg = dict(evaluator_config or {})
        if "model" not in cfg:
            raise ConfigError(f"the domain-finder evaluator needs the model folder: {USAGE}")
        folder = resolve_model_folder(cfg["model"])
        recipe_cfg = cfg.get("recipe")
        recipe = (Recipe.load(recipe_cfg) if isinstance(recipe_cfg, (str, type(None)))
                  else Recipe.from_dict(recipe_cfg, source="evaluator_config recipe"))
        if cfg.get("recipe_overrides"):
            recipe = Recipe.from_dict({**recipe.to_dict(), **cfg["recipe_overrides"]},
                                      source="evaluator_config recipe_overrides")
        identity = identity_of(folder, model_id=cfg.get("model_id"))
        inv = investigate(folder, cfg.get("corpus", "demo"), recipe, identity=identity, run_id=run_id,
                          json_out=cfg.get("json_out"), progress=cfg.get("progress", False),
                          recipe_name=recipe_cfg if isinstance(recipe_cfg, str) else None)
        f = inv.result.findings
        metrics = {**inv.metrics, "mean_functional_score": f.mean_functional_score, "queries": float(f.queries)}
        artifacts = {}
        for rel in inv.artifacts:
            kind = _ARTIFACT_TYPES.get(Path(rel).suffix, TextEvaluationArtifact)
            artifacts[str(rel)] = kind(uri=tracking.artifact_uri(inv.run_id, str(rel)))
        return EvaluationResult(metrics=metrics, artifacts=artifacts, run_id=inv.run_id)
