"""Every row of issue 10's bad-input table: one line, the right exit code, no run, no query spent."""
from __future__ import annotations

import mlflow
import pytest

from plugin.cli import EXIT_HUB, main
from plugin.core import blackbox
from plugin.core.errors import ConfigError
from plugin.core.recipe import Recipe
from plugin.demo.corpus import load_demo_corpus
from plugin.investigate import pass_queries


@pytest.fixture
def spy_queries(monkeypatch):
    """Counts real black-box queries (the real predict still runs)."""
    calls = []
    real = blackbox.CountingBlackBox.predict

    def predict(self, images):
        calls.append(len(images))
        return real(self, images)

    monkeypatch.setattr(blackbox.CountingBlackBox, "predict", predict)
    return calls


def _refused(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")
    capsys.readouterr()  # MLflow's own log lines from creating the (empty) store for that check
    return lines[0]


def _recipe(tmp_path, text: str) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("yaml_text, key, words", [
    ("checks: dataset_index\n", "checks", "list of names"),
    ("noise: high\n", "noise", "number"),
    ('images_per_leaf: "lots"\n', "images_per_leaf", "integer"),
    ("threshold: 2\n", "threshold", "threshold must be in"),
    ("nosuch_knob: 1\n", "nosuch_knob", "unknown recipe keys"),
])
def test_bad_recipe_names_key_and_file(tmp_path, capsys, spy_queries, yaml_text, key, words):
    path = _recipe(tmp_path, yaml_text)
    line = _refused(capsys, ["investigate", "footwear", "--recipe", path])
    assert key in line and path in line and words in line
    assert not spy_queries


@pytest.mark.parametrize("extra, words", [
    (["--check", "nosuch"], "unknown check 'nosuch'"),
    (["--json", "/proc/x.json"], "--json /proc/x.json"),
    (["--aux", "flavia=/nope"], "/nope"),
    (["--corpus", "/nonexistent"], "/nonexistent"),
])
def test_bad_investigate_options_refused_up_front(capsys, spy_queries, extra, words):
    line = _refused(capsys, ["investigate", "footwear", "--recipe", "ci", *extra])
    assert words in line
    assert not spy_queries


def test_budget_says_how_many_queries_are_needed(capsys, spy_queries):
    needed = pass_queries(load_demo_corpus(), Recipe.load("ci"), least=True)
    line = _refused(capsys, ["investigate", "footwear", "--recipe", "ci", "--budget", "50"])
    assert f"below the {needed} queries" in line and "first round" in line
    assert not spy_queries


def test_adaptive_budget_below_a_full_pass_is_planned_not_refused():
    """The adaptive pass fits its rounds into a budget: only less than its first round is refused."""
    from plugin.investigate import plan_investigation

    corpus, recipe = load_demo_corpus(), Recipe.load("ci")
    least, full = pass_queries(corpus, recipe, least=True), pass_queries(corpus, recipe)
    assert least < full
    plan_investigation(corpus, recipe.replace(query_budget=least))
    with pytest.raises(ConfigError, match=f"below the {least} queries"):
        plan_investigation(corpus, recipe.replace(query_budget=least - 1))
    with pytest.raises(ConfigError, match=f"below the {full} queries"):  # the exhaustive pass needs all of it
        plan_investigation(corpus, recipe.replace(score_pass="exhaustive", query_budget=full - 1))


@pytest.mark.parametrize("argv", [
    ["schedule", "--at", "25:99", "--source", "demo"],
    ["investigate", "footwear", "--budget", "-3"],
    ["serve-hub", "/tmp", "--port", "99999"],
])
def test_usage_errors_exit_2_in_one_line(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len([l for l in err.splitlines() if l.strip()]) == 1 and "Traceback" not in err, err
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.mark.parametrize("value", ["many", "0", "-2", "1e3", "²", "999"])
def test_bad_thread_setting_refused_before_any_work(capsys, spy_queries, monkeypatch, value):
    monkeypatch.setenv("DOMAIN_FINDER_THREADS", value)
    line = _refused(capsys, ["investigate", "footwear", "--recipe", "ci"])
    assert "DOMAIN_FINDER_THREADS" in line and repr(value) in line
    assert not spy_queries


def test_fetch_threads_follow_the_cores_or_the_setting(monkeypatch):
    """A GPU box's cores decode in parallel; a 2-core machine keeps 2; the setting wins."""
    import os

    from plugin.core.scores import _Pipeline
    from plugin.core.settings import io_threads

    monkeypatch.delenv("DOMAIN_FINDER_THREADS", raising=False)
    for cores, want in [(1, 2), (2, 2), (16, 8), (None, 2)]:
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert io_threads() == want
    monkeypatch.setenv("DOMAIN_FINDER_THREADS", "3")
    assert io_threads() == 3
    with _Pipeline(blackbox.CountingBlackBox(num_classes=2), load_demo_corpus(), Recipe.load("ci"), None) as pipe:
        assert pipe.threads == 3 and pipe.pool._max_workers == 3


def test_serve_hub_missing_folder(capsys):
    assert "serve-hub /nope: no such folder" in _refused(capsys, ["serve-hub", "/nope"])


def test_scan_validates_before_listing(tmp_path, capsys):
    path = _recipe(tmp_path, "noise: high\n")
    assert "noise" in _refused(capsys, ["scan", "--source", "demo", "--recipe", path])
    assert "unknown corpus" in _refused(capsys, ["scan", "--source", "demo", "--corpus", "/nonexistent"])


def test_unreachable_hub_has_its_own_exit_code(capsys):
    # A closed loopback port: the real huggingface_hub client gets "connection refused".
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["scan", "--source", f"hf:http://127.0.0.1:{port}", "--recipe", "ci", "--no-progress"])
    err = capsys.readouterr().err
    assert code == EXIT_HUB, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command, missing", [(["investigate", "footwear"], True),
                                              (["scan", "--source", "demo"], False)])
def test_recipe_listing_generative_with_bad_weights_is_refused_before_any_query(tmp_path, capsys, spy_queries,
                                                                                command, missing):
    """The generative check's validate hook runs in plan_investigation: a recipe alone is refused too."""
    pytest.importorskip("diffusers")
    sd, words = (tmp_path / "nowhere", "no such folder") if missing else (tmp_path, "no model_index.json")
    path = _recipe(tmp_path, f"images_per_leaf: 8\nchecks: [generative]\ncheck_options:\n  generative:\n"
                             f"    sd_dir: {sd}\n    clip_dir: {tmp_path}\n")
    line = _refused(capsys, [*command, "--recipe", path])
    assert line.startswith(f"domain-finder: error: --generative {sd}") and words in line, line
    assert not spy_queries


def test_aux_passes_are_kept_from_the_budget(tmp_path):
    """The aux check's passes are planned like any check's reserve: counted, kept, and named when short."""
    from plugin.investigate import plan_investigation
    from test_aux_corpora import make_image_folder

    root = make_image_folder(tmp_path / "pets")
    corpus, recipe = load_demo_corpus(), Recipe.load("ci")
    plan = plan_investigation(corpus, recipe, checks=["aux"], check_options={"aux": {"corpora": [f"pets={root}"]}})
    (label, aux), = plan.check_options["aux"]["loaded"]
    assert plan.reserved == pass_queries(aux, recipe) > 0
    assert plan.queries == plan.score_queries + plan.reserved
    least = pass_queries(corpus, recipe, least=True)
    with pytest.raises(ConfigError, match=f"below the {least + plan.reserved} queries .* \\+ aux {plan.reserved}"):
        plan_investigation(corpus, recipe.replace(query_budget=least + plan.reserved - 1), checks=["aux"],
                           check_options={"aux": {"corpora": [f"pets={root}"]}})
