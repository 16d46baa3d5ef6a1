"""The MLflow view: every run of a scan, failed ones included, carries the headline tags and metrics."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from crawler.scan import scan
from plugin import tracking
from plugin.core.recipe import Recipe
from plugin.demo import hub as demo_hub
from plugin.tracking import HEADLINE_METRICS, TAG_PREFIX
from render_html import render

FAST = Recipe.load("ci").replace(images_per_leaf=3, transforms_per_image=1)
HEADLINE_TAGS = ("domain", "verdict", "outcome", "dataset_order")


@pytest.fixture
def mixed_hub(tmp_path):
    """A dir: source with a good classifier, an unsafe pickle and a corrupt safetensors file."""
    hub = tmp_path / "hub"
    demo_hub.write_tiny_repo(hub / "t" / "good", seed=1)
    demo_hub.write_tiny_repo(hub / "t" / "unsafe", seed=4, weights="unsafe")
    bad = hub / "t" / "corrupt"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": 3}))
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    return hub


@pytest.mark.slow
def test_every_scan_run_has_headline_tags_and_metrics(mixed_hub, tmp_path):
    with tracking.experiment("view-test"):
        report = scan(f"dir:{mixed_hub}", recipe=FAST, timeout_s=300)
    outcomes = report.outcomes()
    assert outcomes == {"t/good": "investigate", "t/unsafe": "refused-unsafe", "t/corrupt": "failed-corrupt"}
    exp = mlflow.get_experiment_by_name("view-test")
    assert exp.tags.get("mlflow.note.content", "").startswith("**domain-finder**")
    runs = MlflowClient().search_runs([exp.experiment_id])
    kids = [r for r in runs if TAG_PREFIX + "scan" not in r.data.tags]
    assert len(kids) == 3
    for r in kids:
        tags, metrics = r.data.tags, r.data.metrics
        assert all(tags.get(k) for k in HEADLINE_TAGS), (r.info.run_name, tags)
        assert set(HEADLINE_METRICS) <= set(metrics), (r.info.run_name, metrics)
        assert tags[TAG_PREFIX + "status"] != "running" and tags.get("mlflow.note.content")
        assert tags["outcome"] == outcomes[tags[TAG_PREFIX + "model_id"]]
        if r.info.status == "FAILED":
            assert tags["verdict"] == tags["outcome"] and tags["domain"] == "none"
            assert all(metrics[k] == 0 for k in HEADLINE_METRICS)
        else:
            assert tags["verdict"] in {"one-domain", "several-domains", "inconclusive", "not-found"}
            assert metrics["num_classes"] == 3 and metrics["queries_total"] > 0
            assert [i.dataset.name for i in r.inputs.dataset_inputs] == ["demo"]
    arts = {a.path for a in MlflowClient().list_artifacts(report.run_id)}
    assert "scan_report.html" in arts
    page = Path(MlflowClient().download_artifacts(report.run_id, "scan_report.html", str(tmp_path)))
    dom, console = render(page)
    assert console == []
    text = dom.replace("\n", " ")
    assert text.index("t/unsafe") < text.index("t/good") and text.index("t/corrupt") < text.index("t/good")
    for kid in kids:
        assert kid.info.run_id in dom  # a sqlite store has no UI address: linked by run id


def test_per_class_table_comes_back_through_load_table():
    """``classes.json`` is an MLflow table: one row a class, read back by ``load_table`` as logged."""
    from plugin import view
    from plugin.core.findings import ClassFinding, Node

    jersey, coat = Node("n03595614", "jersey"), Node("n03057021", "coat")
    classes = [ClassFinding(0, True, (jersey,), jersey, 0.74126, 0.5, 0.5, 8, (), stability=1.0, status="found"),
               ClassFinding(1, False, (coat,), coat, 0.69, 0.4, 0.4, 6, (), stability=0.6875, status="uncertain"),
               ClassFinding(2, False, (), None, 0.0, 0.0, 0.0, 0, ())]
    with tracking.experiment("class-table") as exp, mlflow.start_run(experiment_id=exp) as run:
        tracking.log_class_table(classes, ["T-shirt", "coat"])
    table = MlflowClient().load_table(exp, "classes.json", run_ids=[run.info.run_id])
    assert list(table.columns) == list(view.CLASS_COLUMNS)
    rows = table.to_dict("records")
    assert [(r["class"], r["label"], r["domain"], r["status"], r["n"]) for r in rows] == [
        (0, "T-shirt", "jersey", "found", 8), (1, "coat", "coat", "uncertain", 6), (2, "", "", "not-found", 0)]
    # 3 significant digits as logged (MLflow's JSON round trip adds float noise in the last bit).
    assert [v for r in rows for v in (r["stability"], r["score"])] == pytest.approx([1.0, 0.741, 0.688, 0.69, 1.0, 0.0])
