"""Shared fixtures: every test gets its own MLflow store and HF cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The decoded-image and demo-model caches are shared across tests on purpose:
# demo models take ~2 minutes to build and are keyed on their own source.
os.environ.setdefault("DOMAIN_FINDER_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "domain-finder"))


@pytest.fixture(autouse=True)
def isolated_stores(tmp_path, monkeypatch):
    """Points MLflow tracking and the Hugging Face cache at ``tmp_path``."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    import mlflow
    from mlflow.tracking import fluent

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    fluent._active_experiment_id = None  # an experiment id of another test's store means nothing here
    yield
    while mlflow.active_run():
        mlflow.end_run()
    fluent._active_experiment_id = None


@pytest.fixture(scope="session")
def demo_models():
    """Builds (or reuses) the demo models; returns ``(root, ground_truth)``."""
    from plugin.demo.models import build_demo_models, models_root

    truth = build_demo_models(progress=False)
    return models_root(), truth


@pytest.fixture(scope="session")
def demo_corpus():
    from plugin.demo.corpus import load_demo_corpus

    return load_demo_corpus()
