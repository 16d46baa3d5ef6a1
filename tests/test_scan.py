"""Scans: incremental via the MLflow ledger, isolation, failures recorded, the store shared by concurrent scans."""
from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

from plugin.demo import hub as demo_hub
from plugin.outcomes import (FAILED_CORRUPT, FAILED_UNSUPPORTED, INVESTIGATE, REFUSED_REMOTE_CODE, REFUSED_UNSAFE,
                             SKIPPED_DOCUMENTED, SKIPPED_ENCODER)
from crawler.scan import ALREADY_AUDITED, scan
from plugin.core.recipe import Recipe
from plugin.tracking import TAG_PREFIX, flag_tags, flags_of_tags

ROOT = Path(__file__).resolve().parents[1]
FAST = Recipe.load("ci").replace(images_per_leaf=3, transforms_per_image=1)


def _child_runs(parent_id=None):
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    kids = [r for r in runs if TAG_PREFIX + "scan" not in r.data.tags]
    if parent_id:
        kids = [r for r in kids if r.data.tags.get("mlflow.parentRunId") == parent_id]
    return kids


@pytest.fixture
def small_hub(tmp_path):
    """A dir: source: two tiny classifiers, an encoder, a documented one, an unsafe pickle, a truncated file."""
    from plugin.demo.hub import demo_hub_root

    hub = tmp_path / "hub"
    demo_hub.write_tiny_repo(hub / "t" / "alpha", seed=1)
    demo_hub.write_tiny_repo(hub / "t" / "beta", seed=2, num_classes=4)
    demo_hub.write_tiny_repo(hub / "t" / "encoder", num_classes=0)
    demo_hub.write_tiny_repo(hub / "t" / "documented", seed=3, card=demo_hub.DIGITS_CARD,
                             label_names=["a", "b", "c"])
    demo_hub.write_tiny_repo(hub / "t" / "unsafe", seed=4, weights="unsafe")
    demo_root = demo_hub_root()
    demo_hub.build_demo_hub(demo_root)
    shutil.copytree(demo_root / "demo" / "truncated-weights", hub / "t" / "truncated")
    from transformers import PPLCNetImageProcessor  # its own short-side rounding and BGR: refused by name

    from plugin.demo.hf_repos import tiny_vit, write_transformers_repo

    write_transformers_repo(hub / "t" / "pplcnet", tiny_vit(["a", "b"]), PPLCNetImageProcessor())
    # A Trainer fine-tune of a timm model: labels and preprocessing in config.json, no preprocessor_config.json.
    import timm
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    pcfg = {k: v for k, v in timm.create_model("test_resnet", pretrained=False).pretrained_cfg.items()
            if k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")}
    labels = ["sandal", "sneaker", "boot"]
    TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="test_resnet", pretrained_cfg=pcfg, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)})).save_pretrained(hub / "t" / "timm-wrapper")
    return hub


def _check_failures(runs):
    for r in runs:
        if r.info.status == "FAILED":
            assert r.data.tags.get(TAG_PREFIX + "error"), r.data.tags


def test_scan_dir_source_incremental(small_hub, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv(demo_hub.PAYLOAD_MARKER_ENV, str(marker))
    spec = f"dir:{small_hub}"
    first = scan(spec, recipe=FAST, timeout_s=300)
    assert first.outcomes() == {"t/alpha": INVESTIGATE, "t/beta": INVESTIGATE, "t/encoder": SKIPPED_ENCODER,
                                "t/documented": SKIPPED_DOCUMENTED, "t/unsafe": REFUSED_UNSAFE,
                                "t/truncated": FAILED_CORRUPT, "t/pplcnet": FAILED_UNSUPPORTED,
                                "t/timm-wrapper": INVESTIGATE}
    rows = {r.repo: r for r in first.rows}
    assert "'PPLCNetImageProcessor' is not one we reproduce" in rows["t/pplcnet"].reason
    assert "undocumented score" in rows["t/documented"].reason
    assert "UnsafeCheckpointError" in rows["t/unsafe"].reason
    assert rows["t/alpha"].queries and rows["t/alpha"].classes_found.endswith("/3")
    assert rows["t/timm-wrapper"].queries and rows["t/timm-wrapper"].classes_found.endswith("/3")
    for r in first.rows:  # each investigated row shows its run's flags, whatever they are
        if r.outcome == INVESTIGATE:
            assert r.flags == flags_of_tags(mlflow.get_run(r.run_id).data.tags)
    kids = _child_runs(first.run_id)
    assert len(kids) == 6
    _check_failures(kids)
    assert not marker.exists()
    parent = mlflow.get_run(first.run_id)
    assert parent.data.tags[TAG_PREFIX + "scan"] == "1" and parent.data.tags[TAG_PREFIX + "source"] == spec
    assert mlflow.get_experiment(parent.info.experiment_id).name == "domain-finder"  # the CLI's default too
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(first.run_id)}
    assert {"scan_summary.csv", "scan_summary.md"} <= arts

    second = scan(spec, recipe=FAST)
    assert {r for r, o in second.outcomes().items() if o == ALREADY_AUDITED} == \
        {"t/alpha", "t/beta", "t/unsafe", "t/truncated", "t/pplcnet", "t/timm-wrapper"}
    assert _child_runs(second.run_id) == []

    demo_hub.bump_repo(small_hub, "t/beta")
    third = scan(spec, recipe=FAST)
    assert third.outcomes()["t/beta"] == INVESTIGATE
    assert [r.data.tags[TAG_PREFIX + "model_id"] for r in _child_runs(third.run_id)] == ["t/beta"]


def test_timeout_marks_run_failed(small_hub):
    rep = scan(f"dir:{small_hub}", recipe=FAST, timeout_s=0.5, limit=1)
    (row,) = rep.rows
    assert row.outcome == "timeout" and "Timeout" in row.reason
    run = mlflow.get_run(row.run_id)
    assert run.info.status == "FAILED" and "Timeout" in run.data.tags[TAG_PREFIX + "error"]


def test_fetch_error_before_investigate_leaves_failed_run(small_hub):
    rep = scan(f"dir:{small_hub}", recipe=FAST, max_bytes=1000, source_options={"search": "alpha"})
    (row,) = rep.rows
    assert row.outcome == "resource-limit" and "cap" in row.reason  # WeightsTooLargeError: a local limit
    run = mlflow.get_run(row.run_id)
    assert run.info.status == "FAILED" and "WeightsTooLargeError" in run.data.tags[TAG_PREFIX + "error"]
    assert run.data.tags["mlflow.parentRunId"] == rep.run_id
    assert run.data.tags[TAG_PREFIX + "limit.max_bytes"] == "1000"
    # The same cap again: settled for now (backing off). A raised cap makes the repo eligible at once.
    assert scan(f"dir:{small_hub}", recipe=FAST, max_bytes=1000, source_options={"search": "alpha"}).rows[0].outcome \
        == ALREADY_AUDITED
    again = scan(f"dir:{small_hub}", recipe=FAST, max_bytes=10**8, timeout_s=300, source_options={"search": "alpha"})
    assert again.rows[0].outcome == INVESTIGATE
    old = mlflow.get_run(row.run_id)
    assert old.data.tags[TAG_PREFIX + "superseded_by"] == again.rows[0].run_id  # one current outcome per (repo, sha)


def test_cli_parsers():
    import argparse

    from plugin.cli.scan import add_scan_parser, scan_kwargs
    from plugin.cli.scan import add_schedule_parser

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_scan_parser(sub)
    add_schedule_parser(sub)
    a = p.parse_args(["scan", "--source", "hf", "--endpoint", "http://x", "--author", "me", "--limit", "3"])
    kw = scan_kwargs(a)
    assert kw["source_spec"] == "hf:http://x" and kw["limit"] == 3 and kw["source_options"] == {"author": "me"}
    a = p.parse_args(["schedule", "--at", "03:30", "--source", "demo"])
    assert a.at == "03:30" and callable(a.func)
    # The nightly schedule takes the same backend options as one scan, and validates them the same way.
    a = p.parse_args(["schedule", "--source", "demo", "--backend", "ray", "--ray-address", "10.0.0.1:6379",
                      "--gpus-per-model", "0.25", "--cpus-per-model", "2"])
    kw = scan_kwargs(a)
    assert (kw["backend"], kw["ray_address"], kw["gpus_per_model"], kw["cpus_per_model"]) == \
        ("ray", "10.0.0.1:6379", 0.25, 2.0)
    from crawler.scan.options import ScanOptions
    from plugin.core.errors import ConfigError

    with pytest.raises(ConfigError, match="need --backend ray"):
        ScanOptions(ray_address="10.0.0.1:6379")
    with pytest.raises(SystemExit):  # the Kubernetes backend is gone
        p.parse_args(["scan", "--source", "demo", "--backend", "kubernetes"])


@pytest.mark.slow
def test_full_demo_scan(tmp_path, monkeypatch):
    from plugin.demo.hub import DemoSource

    marker = tmp_path / "payload-ran"
    monkeypatch.setenv(demo_hub.PAYLOAD_MARKER_ENV, str(marker))
    hub = tmp_path / "demo-hub"
    shutil.copytree(DemoSource.__init__.__globals__["demo_hub_root"](), hub)
    spec = f"demo:{hub}"
    with DemoSource(hub) as src:
        expected = src.expected
    t = time.time()
    first = scan(spec, recipe=FAST)
    print(f"first demo scan {time.time() - t:.0f} s")
    assert first.outcomes() == expected
    kids = _child_runs(first.run_id)
    ran = (INVESTIGATE, REFUSED_UNSAFE, FAILED_CORRUPT, REFUSED_REMOTE_CODE)  # every security outcome is a run too
    assert len(kids) == sum(o in ran for o in expected.values())
    _check_failures(kids)
    assert not marker.exists()
    second = scan(spec, recipe=FAST)
    assert all(o in (ALREADY_AUDITED, SKIPPED_DOCUMENTED, SKIPPED_ENCODER, REFUSED_REMOTE_CODE)
               for o in second.outcomes().values())
    assert _child_runs(second.run_id) == []
    demo_hub.bump_repo(hub, "demo/footwear")
    third = scan(spec, recipe=FAST)
    assert third.outcomes()["demo/footwear"] == INVESTIGATE
    assert [r.data.tags[TAG_PREFIX + "model_id"] for r in _child_runs(third.run_id)] == ["demo/footwear"]


@pytest.mark.slow
def test_sigkill_then_rerun_no_duplicates(small_hub, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv(demo_hub.PAYLOAD_MARKER_ENV, str(marker))
    # The CLI scan and the in-process rerun share one experiment, the ledger's scope: both default to it.
    spec = f"dir:{small_hub}"
    recipe_file = tmp_path / "fast.yaml"
    import yaml

    recipe_file.write_text(yaml.safe_dump({"images_per_leaf": 3, "transforms_per_image": 1}))
    # Create the sqlite store first: two processes creating MLflow's tables at
    # once race ("table already exists"), which is not what this test is about.
    assert _child_runs() == []
    proc = subprocess.Popen([sys.executable, "-m", "plugin.cli", "scan", "--source", spec, "--recipe", str(recipe_file),
                             "--no-progress"], cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if any(r.info.status == "FINISHED" for r in _child_runs()):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("no child run finished in time")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # the orphaned worker notices and exits
    scan(spec, recipe=Recipe.load(str(recipe_file)))
    runs = _child_runs()
    finished: dict = {}
    for r in runs:
        key = (r.data.tags[TAG_PREFIX + "model_id"], r.data.tags[TAG_PREFIX + "revision"])
        if r.info.status == "FINISHED":
            finished[key] = finished.get(key, 0) + 1
    assert set(k[0] for k in finished) == {"t/alpha", "t/beta", "t/timm-wrapper"}
    assert all(v == 1 for v in finished.values()), finished
    _check_failures(runs)
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert {r.data.tags[TAG_PREFIX + "model_id"] for r in failed} >= {"t/unsafe", "t/truncated", "t/pplcnet"}
    assert not marker.exists()


def test_scan_summary_shows_flags_from_run_tags():
    """A flagged run's kinds and classes reach the summary's Markdown, CSV and HTML; an unflagged one shows none."""
    from crawler.scan.orchestrate import _row_of_run
    from crawler.scan.report import SUMMARY_COLUMNS, ScanReport, ScanRow, markdown_table, summary_csv
    from plugin.core.findings import Flag

    flags = [Flag("decoy-suspected", (0, 1, 3)), Flag("sink-class", (2,), {"leaves": ["n1", "n2"]})]
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("Default").experiment_id
    flagged = client.create_run(exp, tags=flag_tags(SimpleNamespace(flags=flags))).info.run_id
    plain = client.create_run(exp, tags=flag_tags(SimpleNamespace(flags=[]))).info.run_id
    client.log_metric(flagged, "stability", 0.90625)
    for rid in (flagged, plain):
        client.set_terminated(rid)
    rows = [_row_of_run(ScanRow("m/flagged", "a" * 40, ""), mlflow.get_run(flagged)),
            _row_of_run(ScanRow("m/plain", "b" * 40, ""), mlflow.get_run(plain))]
    assert rows[0].flags == "decoy-suspected[0,1,3],sink-class[2]" and rows[1].flags == ""
    md = markdown_table(rows)
    assert "| flags |" in md.splitlines()[0] and "decoy-suspected[0,1,3],sink-class[2]" in md
    csv_rows = list(csv.reader(io.StringIO(summary_csv(rows))))
    col = SUMMARY_COLUMNS.index("flags")
    assert [r[col] for r in csv_rows] == ["flags", "decoy-suspected[0,1,3],sink-class[2]", ""]
    html = ScanReport("demo", "r", rows).html()
    assert "<th>flags</th>" in html.replace(" ", "") or ">flags<" in html
    assert "decoy-suspected[0,1,3],sink-class[2]" in html
    # The run's stability (share of bootstrap resamples returning the answer) sits beside its confidence.
    col = SUMMARY_COLUMNS.index("stability")
    assert col == SUMMARY_COLUMNS.index("confidence") + 1 and [r[col] for r in csv_rows] == ["stability", "0.91", ""]
    assert "| stability |" in md.splitlines()[0] and ">stability</th>" in html and "<td>0.91</td>" in html


def test_reap_stale_runs_only_kills_runs_older_than_the_timeout():
    import time as _time

    import mlflow

    from crawler.scan import reap_stale_runs

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("Default").experiment_id
    tags = {"domain_finder.model_id": "demo/x", "domain_finder.revision": "a" * 40}
    old = client.create_run(exp, start_time=int((_time.time() - 7200) * 1000), tags=tags).info.run_id
    fresh = client.create_run(exp, tags=tags).info.run_id
    assert reap_stale_runs(exp, "demo/x", "a" * 40, timeout_s=60) == 1
    assert client.get_run(old).info.status == "KILLED"
    assert "died" in client.get_run(old).data.tags["domain_finder.error"]
    assert client.get_run(fresh).info.status == "RUNNING"


def test_claims_of_a_dead_scan_are_reaped_whatever_their_repo():
    """A dead scan's RUNNING claim is ended KILLED by the next scan's sweep; a live owner's claim is kept."""
    import socket

    from crawler.scan import ledger
    from crawler.scan.ledger import ledger_key
    from plugin.outcomes import T_KEY, T_OWNER

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("Default").experiment_id
    orphan = client.create_run(exp, tags={T_KEY: ledger_key("t/gone", "a" * 40),
                                          T_OWNER: f"{socket.gethostname()}:{dead.pid}:0"}).info.run_id
    mine = client.create_run(exp, tags={T_KEY: ledger_key("t/live", "b" * 40), T_OWNER: ledger.owner_tag()}).info.run_id
    ledger.hold(mine)
    plain = client.create_run(exp).info.run_id  # not a claim: someone's own investigation
    try:
        assert ledger.reap_dead_claims(exp, timeout_s=3600) == 1
    finally:
        ledger.release(mine)
    assert client.get_run(orphan).info.status == "KILLED"
    assert "died" in client.get_run(orphan).data.tags[TAG_PREFIX + "error"]
    assert client.get_run(mine).info.status == "RUNNING" and client.get_run(plain).info.status == "RUNNING"


def test_listing_keeps_triage_facts_not_cards():
    """Listed entries drop card and config (a hostile hub's listing stays small) but keep what triage decides on."""
    from crawler.cards import assess_documentation
    from crawler.scan.orchestrate import _Listed
    from crawler.hub import HubModel

    card = "---\ndatasets: [fashion_mnist]\n---\n# A classifier\n" + "x" * 200_000
    files = (("config.json", None), ("model.safetensors", None))
    documented = HubModel("t/doc", "a" * 40, None, files, (), None, card, {"architecture": "resnet18", "num_classes": 3})
    encoder = HubModel("t/enc", "b" * 40, None, files, (), None, None, {"architecture": "resnet18", "num_classes": 0})
    for model in (documented, encoder):
        listed = _Listed.of(model)
        assert listed.model.card_text is None and listed.model.config is None
        assert listed.model.repo_id == model.repo_id and listed.model.sha == model.sha
        assert listed.doc == assess_documentation(model.card_text, model.config)
    assert _Listed.of(encoder).detected.encoder and not _Listed.of(documented).detected.encoder


@pytest.mark.slow
def test_two_scans_at_once_on_a_fresh_store_under_an_inherited_memory_limit(tmp_path):
    """Two CLI scans started together on a fresh SQLite store, both under ``ulimit -v 16000000``.

    Both exit 0 (no schema-migration race); the one model has exactly one FINISHED run and nothing stays
    RUNNING, deleted claims included; the worker's limit was clamped to the inherited one, and the run says so.
    """
    import resource

    import yaml
    from mlflow.entities import ViewType

    hub = tmp_path / "hub"
    demo_hub.write_tiny_repo(hub / "t" / "solo", seed=7)
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(yaml.safe_dump({"images_per_leaf": 3, "transforms_per_image": 1}))
    db = tmp_path / "fresh" / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    limit = 16_000_000 * 1024  # what `ulimit -v 16000000` sets: below the default --worker-memory of 16 GiB

    def ulimit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    procs = [subprocess.Popen([sys.executable, "-m", "plugin.cli", "scan", "--source", f"dir:{hub}", "--recipe",
                               str(recipe), "--no-progress"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, preexec_fn=ulimit) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(exps, "", run_view_type=ViewType.ALL)
            if r.data.tags.get(TAG_PREFIX + "model_id") == "t/solo"]
    assert sorted(r.info.status for r in runs if r.info.lifecycle_stage == "active") == ["FINISHED"]
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    (done,) = [r for r in runs if r.info.status == "FINISHED"]
    assert done.data.tags[TAG_PREFIX + "worker_limit.memory"] == str(limit)
    assert "inherited hard limit" in done.data.tags[TAG_PREFIX + "worker_limit.memory_clamped"]
