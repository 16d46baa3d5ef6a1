"""Investigations as MLflow runs: CLI, evaluate(), the run-context provider, failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from plugin.cli import main
from plugin.demo.models import model_dir
from plugin.core.recipe import Recipe
from plugin.view import sig3

ROOT = Path(__file__).resolve().parents[1]


def _only_run():
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    return runs[0]


def _without_run_specifics(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    for k in ("time", "mlflow_run_id"):
        d["summary"]["provenance"].pop(k)
    return d


@pytest.mark.slow
def test_cli_investigation_logs_everything(demo_models, tmp_path):
    out = tmp_path / "f.json"
    assert main(["investigate", "footwear", "--recipe", "ci", "--json", str(out), "--no-progress"]) == 0
    run = _only_run()
    assert run.info.status == "FINISHED"
    exp = mlflow.get_experiment(run.info.experiment_id)
    assert exp.name == "domain-finder" and exp.tags["mlflow.note.content"]
    assert run.info.run_name.startswith("footwear \u00b7 ")  # the headline: model · domain · confidence
    recipe = Recipe.load("ci")
    assert {f"recipe.{k}" for k in recipe.to_params()} <= set(run.data.params)
    assert run.data.params["model.num_classes"] == "3" and run.data.params["recipe"] == "ci"
    assert {"mean_functional_score", "found_fraction", "queries", "wall_time_s", "classes_found", "num_classes",
            "confidence", "queries_total"} <= set(run.data.metrics)
    tags = run.data.tags
    assert tags["verdict"] in {"one-domain", "several-domains", "inconclusive", "not-found"}
    assert tags["outcome"] == "investigate" and tags["domain"] and tags["dataset_order"]
    assert tags["domain_finder.status"] == "finished"
    findings = json.loads(out.read_text())
    assert list(findings)[:2] == ["version", "summary"] and list(findings)[-1] == "recipe"
    summary = findings["summary"]
    assert summary["answer"] in tags["mlflow.note.content"]
    assert run.data.metrics["confidence"] == sig3(summary["confidence"])  # 3 significant digits in the table
    prov = summary["provenance"]
    assert prov["sha256"]["model.safetensors"] == tags["domain_finder.sha256.model.safetensors"]
    assert prov["tool_version"] and prov["corpus_digest"] and prov["time"] and prov["recipe"] == "ci"
    (dataset,) = [i.dataset for i in run.inputs.dataset_inputs]
    assert dataset.name == "demo" and prov["corpus_digest"].startswith(dataset.digest)
    # The run-context provider tagged the identity when the run started.
    digest = json.loads((model_dir("footwear") / "config.json").read_text()) and tags["domain_finder.sha256.model.safetensors"]
    from plugin.models.checkpoint import sha256_file

    assert digest == sha256_file(model_dir("footwear") / "model.safetensors")
    arts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert {"findings.json", "classes.csv", "heatmap.png", "montages", "report.html", "classes.json"} <= arts
    table = MlflowClient().load_table(run.info.experiment_id, "classes.json", run_ids=[run.info.run_id])
    assert table["status"].tolist() == [c["status"] for c in json.loads(out.read_text())["classes"]]
    montages = MlflowClient().list_artifacts(run.info.run_id, "montages")
    assert len(montages) == sum(c["n_samples"] > 0 for c in json.loads(out.read_text())["classes"])
    assert json.loads(out.read_text())["queries"] == int(run.data.metrics["queries"])


@pytest.mark.slow
def test_evaluate_and_cli_give_identical_findings(demo_models, tmp_path):
    cli_json, eval_json = tmp_path / "cli.json", tmp_path / "eval.json"
    assert main(["investigate", str(model_dir("digits")), "--recipe", "ci", "--json", str(cli_json), "--no-progress",
                 "--model-id", "digits"]) == 0
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            data=pd.DataFrame({"model": [str(model_dir("digits"))]}), model_type="domain-finder",
            evaluators=["domain-finder"],
            evaluator_config={"domain-finder": {"model": str(model_dir("digits")), "recipe": "ci",
                                                "json_out": str(eval_json)}})
    a, b = json.loads(cli_json.read_text()), json.loads(eval_json.read_text())
    assert _without_run_specifics(a) == _without_run_specifics(b)
    eval_run = MlflowClient().get_run(run.info.run_id)
    tags = eval_run.data.tags
    assert tags["domain_finder.model_id"] == "digits"
    cli_run = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
               if r.info.run_id != run.info.run_id][0]
    assert eval_run.info.run_name == cli_run.info.run_name  # the same run name: the same headline
    assert eval_run.info.run_name.startswith("digits \u00b7 ")
    assert result.metrics["found_fraction"] > 0
    assert set(result.metrics) <= set(eval_run.data.metrics)  # the same keys as the run logs
    assert set(result.metrics) <= set(cli_run.data.metrics)
    assert {"findings.json", "report.html", "heatmap.png"} <= set(result.artifacts)
    assert result.artifacts["findings.json"].content["summary"]["answer"] == a["summary"]["answer"]


def test_evaluator_is_strict_and_says_what_is_missing(tmp_path, monkeypatch):
    from plugin.core.errors import ConfigError
    from plugin.evaluator import DomainFinderEvaluator, resolve_model_folder

    assert not DomainFinderEvaluator.can_evaluate(model_type="classifier", evaluator_config={"model": "x"})
    assert DomainFinderEvaluator.can_evaluate(model_type="domain-finder", evaluator_config={"model": "x"})
    with mlflow.start_run(), pytest.raises(ConfigError, match='evaluator_config=.*"model"'):
        mlflow.models.evaluate(data=pd.DataFrame({"model": ["x"]}), model_type="domain-finder",
                               evaluators=["domain-finder"])
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_folder("m") == (tmp_path / "m").resolve()  # relative paths resolve against the cwd
    with pytest.raises(ConfigError, match=f"looked for {tmp_path.resolve() / 'nope'}"):
        resolve_model_folder("nope")


def test_broken_checkpoint_becomes_failed_run(tmp_path, capsys):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": 3}))
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    from plugin.investigate import investigate

    with pytest.raises(Exception, match="safetensors"):
        investigate(bad, "demo", Recipe.load("ci"), progress=False)
    run = _only_run()
    assert run.info.status == "FAILED"
    assert "safetensors" in run.data.tags["domain_finder.error"]
    tags = run.data.tags
    assert tags["outcome"] == tags["verdict"] == "failed-corrupt" and tags["domain"] == "none"
    assert tags["domain_finder.status"] == "failed" and tags["mlflow.note.content"].startswith("**failed-corrupt**")
    assert run.info.run_name == "FAILED-CORRUPT \u00b7 broken"  # loud in the runs table
    assert {k: run.data.metrics.get(k) for k in ("classes_found", "num_classes", "found_fraction", "confidence",
                                                 "queries_total")} == dict.fromkeys(
        ("classes_found", "num_classes", "found_fraction", "confidence", "queries_total"), 0.0)
    assert main(["investigate", str(bad), "--recipe", "ci"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_mlflow_run_entry_point(demo_models, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'proj.db'}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # as in an activated venv
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "investigate", "-P",
                           f"model={model_dir('digits')}", "-P", "recipe=ci", "--env-manager", "local"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["verdict"] in {"one-domain", "several-domains"}
    assert runs[0].info.run_name.startswith("digits \u00b7 ")
    assert runs[0].data.tags["domain_finder.model_id"] == "digits"
    assert "recipe.images_per_leaf" in runs[0].data.params
