"""Listing the Hub as it is: image classifiers of every library, triage from the listing, rate limits honoured.

The real ``huggingface_hub`` client and our :class:`HfSource` against ``serve-hub`` on loopback.
"""
from __future__ import annotations

import time

import mlflow
import pytest
from huggingface_hub import HfApi

from crawler.hub import HfSource, ListingError
from crawler.hub.server import Handler, serve_hub
from plugin.core.errors import ConfigError
from plugin.core.recipe import Recipe
from plugin.demo.hf_repos import (PAYLOAD_MARKER_ENV, tiny_resnet, tiny_vit, trainer_card, write_onnx_repo,
                                  write_remote_code_repo, write_transformers_repo, write_unsupported_repo)
from plugin.demo.hub import write_tiny_repo, write_unsafe_pickle
from plugin.outcomes import (INVESTIGATE, REFUSED_REMOTE_CODE, REFUSED_UNSAFE, SKIPPED_UNSUPPORTED_FORMAT,
                             TAG_PREFIX)

CLASSIFIERS = {"hf/vit-trainer": "transformers", "hf/resnet-onnx": "onnx", "hf/remote": "transformers",
               "hf/keras": "keras", "timm/plain": "timm"}
EXPAND = ["library_name", "tags", "siblings", "cardData", "config", "sha", "pipeline_tag"]
FAST = Recipe.load("ci").replace(images_per_leaf=3, transforms_per_image=1)


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    write_transformers_repo(root / "hf/vit-trainer", tiny_vit(["sandal", "sneaker", "ankle boot"], seed=1),
                            card=trainer_card("vit-trainer"))
    src = write_transformers_repo(root / "src-only" / "resnet", tiny_resnet(["bag", "coat"], seed=2))
    write_onnx_repo(root / "hf/resnet-onnx", src)
    (root / "hf/resnet-onnx/README.md").write_text(trainer_card("resnet-onnx", base="microsoft/resnet-18"))
    write_remote_code_repo(root / "hf/remote")
    write_unsupported_repo(root / "hf/keras", "keras")
    pickled = write_transformers_repo(root / "hf/pickled", tiny_vit(["a", "b"], seed=4), pickle=True,
                                      card=trainer_card("pickled"))
    write_unsafe_pickle(pickled / "pytorch_model.bin", tiny_vit(["a", "b"], seed=4).state_dict())
    from transformers import ViTConfig, ViTModel

    write_transformers_repo(root / "hf/vit-encoder", ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                                        num_hidden_layers=1, num_attention_heads=4,
                                                                        intermediate_size=37)))
    write_tiny_repo(root / "timm/plain", seed=1)
    (root / "text/bert").mkdir(parents=True)
    (root / "text/bert/config.json").write_text('{"model_type": "bert", "architectures": ["BertForMaskedLM"]}')
    import shutil

    shutil.rmtree(root / "src-only")
    return root


@pytest.fixture()
def hub(hub_dir):
    with serve_hub(hub_dir, page_size=3) as server:
        yield server


def test_real_client_lists_image_classifiers_of_every_library(hub):
    api = HfApi(endpoint=hub.url, token=False)
    models = {m.id: m for m in api.list_models(pipeline_tag="image-classification", expand=EXPAND)}
    assert set(models) == {*CLASSIFIERS, "hf/pickled"}  # no encoder, no text model
    assert {i: models[i].library_name for i in CLASSIFIERS} == CLASSIFIERS  # inferred from files + config
    assert "custom_code" in models["hf/remote"].tags and "generated_from_trainer" in models["hf/vit-trainer"].tags
    assert models["hf/vit-trainer"].config["architectures"] == ["ViTForImageClassification"]
    assert models["hf/vit-trainer"].card_data["datasets"] == ["imagefolder"]
    narrowed = [m.id for m in api.list_models(pipeline_tag="image-classification", filter="transformers")]
    assert sorted(narrowed) == ["hf/pickled", "hf/remote", "hf/vit-trainer"]
    assert [m.id for m in api.list_models(pipeline_tag="image-feature-extraction")] == ["hf/vit-encoder"]
    with pytest.raises(Exception, match="expand"):  # as on the Hub: expand and full don't mix
        list(api.list_models(expand=["tags"], full=True))


def test_default_listing_triages_from_the_listing_alone(hub):
    listed = {m.repo_id: m for m in HfSource(endpoint=hub.url).list_models()}
    assert set(listed) == {*CLASSIFIERS, "hf/pickled"}
    assert listed["hf/remote"].detected.refused and listed["hf/keras"].detected.format == "keras"
    assert listed["hf/vit-trainer"].card_text.startswith("---") and listed["hf/vit-trainer"].config["id2label"]
    per_repo = [r for r in hub.request_log if not r.startswith("GET /api/models?")]
    # No config.json request at all (the listing expands it); a README only for a candidate for investigation.
    assert not [r for r in per_repo if "config.json" in r]
    assert sorted(r.split("/")[1] + "/" + r.split("/")[2] for r in per_repo) == \
        ["hf/pickled", "hf/resnet-onnx", "hf/vit-trainer"]  # timm/plain has no README
    libs = HfSource(endpoint=hub.url, library=["timm", "onnx"]).list_models()
    assert [m.repo_id for m in libs] == ["timm/plain", "hf/resnet-onnx"]  # one listing per library, in order


class _RateLimited(Handler):
    """Answers the second page's first request with 429 and only a RateLimit header (reset in 1 s)."""

    limited: set = set()

    def _route(self):
        if self.path.startswith("/api/models?") and "cursor=3" in self.path and self.path not in self.limited:
            self.limited.add(self.path)
            self._send(429, b'{"error": "rate limited"}',
                       {"RateLimit": '"api";r=0;t=1', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'})
            return
        super()._route()

    do_GET = do_HEAD = _route


class _Broken(Handler):
    """The second page always fails."""

    def _route(self):
        if self.path.startswith("/api/models?") and "cursor=3" in self.path:
            self._send(503, b"{}", {"Retry-After": "0"})
            return
        super()._route()

    do_GET = do_HEAD = _route


def test_429_waits_as_the_ratelimit_header_says(hub_dir):
    with serve_hub(hub_dir, page_size=3, handler=_RateLimited) as server:
        t0 = time.monotonic()
        ids = [m.repo_id for m in HfSource(endpoint=server.url).list_models()]
        waited = time.monotonic() - t0
        assert len(ids) == 6 and waited >= 1.0
        assert len(_RateLimited.limited) == 1  # refused once...
        assert len([r for r in server.request_log if "cursor=3" in r]) == 1  # ...then served, once


def test_a_failing_page_stops_with_a_cursor_that_resumes_the_listing(hub_dir):
    got = []
    with serve_hub(hub_dir, page_size=3, handler=_Broken) as server:
        with pytest.raises(ListingError) as e:
            for m in HfSource(endpoint=server.url, max_retry_wait_s=1).list_models():
                got.append(m.repo_id)
        cursor = e.value.cursor
        assert len(got) == 3 and "cursor=3" in cursor and "resume from" in str(e.value)
    with serve_hub(hub_dir, page_size=3) as server:
        cursor = cursor.replace(cursor.split("/api/")[0], server.url)  # the same hub, restarted on a new port
        rest = [m.repo_id for m in HfSource(endpoint=server.url, resume=cursor).list_models()]
        assert not [r for r in server.request_log if r.startswith("GET /api/models?") and "cursor" not in r]
    assert sorted(got + rest) == sorted({*CLASSIFIERS, "hf/pickled"})
    with pytest.raises(ConfigError, match="not a listing"):  # a cursor never sends the token elsewhere
        HfSource(endpoint="http://127.0.0.1:9", resume="http://evil.example/api/models?cursor=3")


@pytest.mark.slow
def test_scan_of_the_hub_as_it_is(hub, tmp_path, monkeypatch):
    from crawler.scan import ALREADY_AUDITED, scan

    marker = tmp_path / "ran"
    monkeypatch.setenv(PAYLOAD_MARKER_ENV, str(marker))
    spec = f"hf:{hub.url}"
    first = scan(spec, recipe=FAST, timeout_s=300, source_options={"author": "hf"})
    assert first.outcomes() == {"hf/vit-trainer": INVESTIGATE, "hf/resnet-onnx": INVESTIGATE,
                                "hf/remote": REFUSED_REMOTE_CODE, "hf/keras": SKIPPED_UNSUPPORTED_FORMAT,
                                "hf/pickled": REFUSED_UNSAFE}
    rows = {r.repo: r for r in first.rows}
    assert "auto_map" in rows["hf/remote"].reason and "keras" in rows["hf/keras"].reason
    assert rows["hf/vit-trainer"].classes_found.endswith("/3")
    assert not marker.exists()  # neither the pickle payload nor the remote code ran
    parent = mlflow.get_run(first.run_id)
    assert parent.data.metrics["scan.format.transformers"] == 3 and parent.data.metrics["scan.format.onnx"] == 1
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    vit = next(r for r in runs if r.data.tags.get(TAG_PREFIX + "model_id") == "hf/vit-trainer")
    assert vit.data.params["model.architecture"] == "ViTForImageClassification"
    assert vit.data.params["model.has_label_names"] == "True"
    # A security outcome is a FAILED run in the runs table, though nothing was downloaded.
    remote = next(r for r in runs if r.data.tags.get(TAG_PREFIX + "model_id") == "hf/remote")
    assert remote.info.status == "FAILED" and remote.data.tags[TAG_PREFIX + "category"] == REFUSED_REMOTE_CODE
    assert remote.info.run_name.startswith("REFUSED-REMOTE-CODE")

    second = scan(spec, recipe=FAST, source_options={"author": "hf"})
    assert {r for r, o in second.outcomes().items() if o == ALREADY_AUDITED} == \
        {"hf/vit-trainer", "hf/resnet-onnx", "hf/pickled", "hf/remote"}  # a refusal is settled for its sha
    after = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(after) == len(runs) + 1  # a rescan adds its own scan run and nothing else
