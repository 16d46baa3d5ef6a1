"""MLflow ``model_evaluator`` entry point: a thin adapter over :func:`investigate`.

Usage::

    mlflow.models.evaluate(data=pd.DataFrame({"model": [folder]}), model_type="domain-finder",
                           evaluators=["domain-finder"],
                           evaluator_config={"domain-finder": {"model": folder, "corpus": "demo", "recipe": "demo"}})
"""
from __future__ import annotations

from mlflow.models.evaluation import ModelEvaluator
from mlflow.models.evaluation.base import EvaluationResult

from plugin.core.recipe import Recipe
from plugin.investigate import investigate

MODEL_TYPE = "domain-finder"


class DomainFinderEvaluator(ModelEvaluator):
    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        # Strict: MLflow runs every evaluator that says yes, so only claim our own model type.
        return model_type == MODEL_TYPE and isinstance(evaluator_config, dict) and "model" in evaluator_config

    def evaluate(self, *, model_type, dataset, run_id, evaluator_config, model=None, **kwargs):
        cfg = dict(evaluator_config)
        recipe = Recipe.load(cfg.get("recipe")) if isinstance(cfg.get("recipe"), (str, type(None))) else Recipe.from_dict(cfg["recipe"])
        if cfg.get("recipe_overrides"):
            recipe = recipe.replace(**cfg["recipe_overrides"])
        inv = investigate(cfg["model"], cfg.get("corpus", "demo"), recipe, run_id=run_id,
                          json_out=cfg.get("json_out"), progress=cfg.get("progress", False))
        f = inv.result.findings
        metrics = {"domain_finder/found_fraction": f.found_fraction,
                   "domain_finder/mean_functional_score": f.mean_functional_score,
                   "domain_finder/queries": float(f.queries)}
        return EvaluationResult(metrics=metrics, artifacts={}, run_id=run_id)
