"""Model sources: a folder and the loopback hub agree; fetching is pinned, capped and safe."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from plugin.models.checkpoint import load_checkpoint, sha256_file
from plugin.demo.hub import (FAILED_CORRUPT, INVESTIGATE, PAYLOAD_MARKER_ENV, REFUSED_REMOTE_CODE, REFUSED_UNSAFE,
                              SKIPPED_DOCUMENTED, SKIPPED_ENCODER, bump_repo, write_tiny_repo)
from crawler.hub.server import serve_hub
from crawler.hub import DirSource, HfSource, HubModel, WeightsTooLargeError, get_source
from plugin.demo.hub import DemoSource
from plugin.core.errors import CheckpointError, ConfigError, HubError, UnknownNameError, UnsafeCheckpointError

CARD = "---\nlibrary_name: timm\ndatasets: [cifar10]\n---\nTrained on CIFAR-10.\n"


@pytest.fixture()
def hub_dir(tmp_path):
    root = tmp_path / "hub"
    write_tiny_repo(root / "acme/plain", seed=1)
    write_tiny_repo(root / "acme/carded", seed=2, card=CARD, label_names=["a", "b", "c"])
    write_tiny_repo(root / "acme/both", seed=3, weights="both")
    write_tiny_repo(root / "evil/payload", seed=4, weights="unsafe")
    return root


@pytest.fixture()
def hub(hub_dir):
    with serve_hub(hub_dir, page_size=2) as server:
        yield server


def test_dir_and_hf_sources_agree(hub, hub_dir):
    local = {m.repo_id: m for m in DirSource(hub_dir).list_models()}
    remote = {m.repo_id: m for m in HfSource(endpoint=hub.url).list_models()}
    assert sorted(local) == sorted(remote) == ["acme/both", "acme/carded", "acme/plain", "evil/payload"]
    hf = HfSource(endpoint=hub.url)
    for repo_id, lm in local.items():
        rm = remote[repo_id]
        assert lm.sha == rm.sha and len(lm.sha) == 40
        assert lm.last_modified == rm.last_modified and lm.last_modified.endswith("Z")
        assert lm.filenames == rm.filenames
        assert lm.tags == rm.tags and "timm" in lm.tags
        assert lm.card_text == rm.card_text and lm.config == rm.config
        # The list endpoint gives no sizes; a HEAD request agrees with the folder.
        assert all(size is None for _, size in rm.siblings)
        assert all(hf._size(rm, name) == size for name, size in lm.siblings)
    assert remote["acme/carded"].card_text == CARD and remote["acme/plain"].card_text is None
    assert remote["acme/carded"].config["label_names"] == ["a", "b", "c"]
    assert {m.source for m in remote.values()} == {f"hf:{hub.url}"}


def test_listing_is_lazy_and_honours_options(hub, hub_dir):
    it = HfSource(endpoint=hub.url).list_models()
    first = next(it)
    assert first.repo_id == "acme/both"
    assert len([r for r in hub.request_log if r.startswith("GET /api/models?")]) == 1  # one page so far
    assert [m.repo_id for m in HfSource(endpoint=hub.url, author="evil").list_models()] == ["evil/payload"]
    assert [m.repo_id for m in DirSource(hub_dir, search="card").list_models()] == ["acme/carded"]
    assert [m.repo_id for m in HfSource(endpoint=hub.url, filter="dataset:cifar10").list_models()] == ["acme/carded"]
    assert len(list(DirSource(hub_dir, limit=2).list_models())) == 2


@pytest.mark.parametrize("kind", ["dir", "hf"])
def test_fetch_prefers_safetensors_and_loads(kind, hub, hub_dir, tmp_path):
    source = DirSource(hub_dir) if kind == "dir" else HfSource(endpoint=hub.url)
    model = next(m for m in source.list_models() if m.repo_id == "acme/both")
    assert {"model.safetensors", "pytorch_model.bin"} <= set(model.filenames)
    folder = source.fetch(model, tmp_path / "fetched", max_bytes=10 * 2**20)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert sha256_file(folder / "model.safetensors") == sha256_file(hub_dir / "acme/both/model.safetensors")
    net, info = load_checkpoint(folder)
    assert info.weights_file == "model.safetensors" and info.num_classes == 3
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("kind", ["dir", "hf"])
def test_size_cap_refuses_before_downloading(kind, hub, hub_dir, tmp_path):
    source = DirSource(hub_dir) if kind == "dir" else HfSource(endpoint=hub.url)
    model = next(m for m in source.list_models() if m.repo_id == "acme/plain")
    with pytest.raises(WeightsTooLargeError, match="over the .* cap"):
        source.fetch(model, tmp_path / "fetched", max_bytes=100_000)
    assert not (tmp_path / "fetched" / "model.safetensors").exists()
    assert not any(r.startswith("GET /acme/plain/resolve") and "model.safetensors" in r for r in hub.request_log)


@pytest.mark.parametrize("kind", ["dir", "hf"])
def test_fetch_is_pinned_to_the_listed_commit(kind, hub, hub_dir, tmp_path):
    source = DirSource(hub_dir) if kind == "dir" else HfSource(endpoint=hub.url)
    model = next(m for m in source.list_models() if m.repo_id == "acme/plain")
    bump_repo(hub_dir, "acme/plain")
    with pytest.raises(HubError, match="revision"):
        source.fetch(model, tmp_path / "fetched")
    again = next(m for m in source.list_models() if m.repo_id == "acme/plain")
    assert again.sha != model.sha and again.config["revision_counter"] == 1
    assert (source.fetch(again, tmp_path / "fetched2") / "config.json").is_file()


def test_unsafe_pickle_is_fetched_but_never_unpickled(hub, hub_dir, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv(PAYLOAD_MARKER_ENV, str(marker))
    source = HfSource(endpoint=hub.url)
    model = next(m for m in source.list_models() if m.repo_id == "evil/payload")
    folder = source.fetch(model, tmp_path / "fetched")
    assert (folder / "pytorch_model.bin").is_file()
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_checkpoint(folder)
    assert not marker.exists()

    # The payload is live: an unsafe load in a child process does run it.
    code = f"import torch; torch.load({str(folder / 'pytorch_model.bin')!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, PAYLOAD_MARKER_ENV: str(marker)},
                   capture_output=True, timeout=120)
    assert marker.read_text() == "payload ran"


def test_hub_errors_surface_as_hub_error(hub, tmp_path):
    source = HfSource(endpoint=hub.url)
    model = next(iter(source.list_models()))
    ghost = HubModel(repo_id="acme/ghost", sha=model.sha, last_modified=None, siblings=model.siblings,
                        tags=(), pipeline_tag=None)
    with pytest.raises(HubError, match="repository not found"):
        source.fetch(ghost, tmp_path / "x")
    with pytest.raises(HubError):
        source.fetch(ghost, tmp_path / "y", max_bytes=10**9)  # the HEAD for the size fails the same way
    no_weights = HubModel(repo_id=model.repo_id, sha=model.sha, last_modified=None,
                             siblings=(("config.json", 10),), tags=(), pipeline_tag=None)
    with pytest.raises(CheckpointError, match="no weights file"):
        source.fetch(no_weights, tmp_path / "z")


def test_get_source_registry(hub, hub_dir):
    assert isinstance(get_source(f"dir:{hub_dir}"), DirSource)
    hf = get_source(f"hf:{hub.url}", author="acme")
    assert isinstance(hf, HfSource) and hf.endpoint == hub.url
    assert {m.repo_id for m in hf.list_models()} == {"acme/both", "acme/carded", "acme/plain"}
    with pytest.raises(UnknownNameError, match="valid: hf, hf:ENDPOINT, dir:PATH, demo, demo:PATH"):
        get_source("s3:bucket")
    with pytest.raises(ConfigError):
        get_source("dir")
    with pytest.raises(ConfigError):
        get_source(f"dir:{hub_dir / 'missing'}")


def test_demo_source_lists_every_demo_repo_and_each_reaches_its_outcome(demo_models, tmp_path, monkeypatch):
    """A miniature scan over the demo hub: every repo ends where the demo hub says."""
    from crawler.cards import assess_documentation
    from plugin.models import formats

    marker = tmp_path / "payload-ran"
    monkeypatch.setenv(PAYLOAD_MARKER_ENV, str(marker))
    with get_source(f"demo:{tmp_path / 'demo-hub'}") as source:
        assert isinstance(source, DemoSource)
        models = {m.repo_id: m for m in source.list_models()}
        assert sorted(models) == sorted(source.expected)
        assert all(m.source == "demo" and m.pipeline_tag == "image-classification" for m in models.values())
        outcomes = {}
        for repo_id, m in models.items():
            if m.detected.refused:
                outcomes[repo_id] = REFUSED_REMOTE_CODE
            elif m.detected.encoder:
                outcomes[repo_id] = SKIPPED_ENCODER
            elif not assess_documentation(m.card_text, m.config).undocumented:
                outcomes[repo_id] = SKIPPED_DOCUMENTED
            else:
                try:
                    formats.load_blackbox(source.fetch(m, tmp_path / repo_id.replace("/", "__"), max_bytes=50 * 2**20))
                    outcomes[repo_id] = INVESTIGATE
                except UnsafeCheckpointError:
                    outcomes[repo_id] = REFUSED_UNSAFE
                except CheckpointError:
                    outcomes[repo_id] = FAILED_CORRUPT
    assert outcomes == source.expected
    assert sorted(source.expected.values()).count(INVESTIGATE) == 8  # incl. footwear-labelled, transformers, ONNX
    assert not marker.exists()


def test_every_fetch_is_capped_on_bytes_received(hub_dir, tmp_path):
    """A card over the cap, and a file that outgrows its cap while copying, are refused with the limit named."""
    from crawler.hub import DirSource, WeightsTooLargeError
    from plugin.models.limits import MAX_CARD_BYTES

    (hub_dir / "acme/plain/README.md").write_text("word " * (MAX_CARD_BYTES // 4))
    models = {m.repo_id: m for m in DirSource(hub_dir).list_models()}
    big = models["acme/plain"]
    assert big.category == "resource-limit" and big.limit == ("max_card_bytes", MAX_CARD_BYTES)
    assert not models["acme/carded"].error
    with pytest.raises(WeightsTooLargeError) as e:
        DirSource(hub_dir)._download(models["acme/carded"], "model.safetensors", tmp_path / "w", max_bytes=1000)
    assert e.value.limit == "max_bytes" and e.value.value == 1000


def test_fetch_verifies_bytes_against_the_hub_hash(hub, hub_dir, tmp_path):
    source = HfSource(endpoint=hub.url)
    model = next(m for m in source.list_models() if m.repo_id == "acme/plain")
    fetched = source.fetch_verified(model, tmp_path / "f", max_bytes=10 * 2**20)
    assert fetched.verified  # LFS sha256 for the weights, git blob sha1 for config.json
