"""The loopback hub, driven by the real huggingface_hub client."""
from __future__ import annotations

import http.client
import json
import os

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from plugin.models.checkpoint import sha256_file
from plugin.demo.hub import write_tiny_repo
from crawler.hub.folder import HubFolder
from crawler.hub.server import serve_hub
from crawler.hub.http import hub_errors
from plugin.core.errors import HubError

TIMM_REPOS = ["alpha/one", "alpha/two", "beta/four", "beta/three", "gamma/encoder"]


@pytest.fixture()
def hub_dir(tmp_path):
    root = tmp_path / "hub"
    for i, repo in enumerate(TIMM_REPOS):
        write_tiny_repo(root / repo, num_classes=0 if repo == "gamma/encoder" else 3, seed=i)
    (root / "beta/three/README.md").write_text("---\ntags: [clothes]\ndatasets: [fashion_mnist]\n---\nA card.\n")
    (root / "beta/three/extra").mkdir()
    (root / "beta/three/extra/notes.txt").write_text("nested file")
    (root / "other/bert").mkdir(parents=True)  # not timm: filter="timm" must skip it
    (root / "other/bert/README.md").write_text("---\nlibrary_name: transformers\n---\nA text model.\n")
    (root / "other/bert/config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "secret.txt").write_text("outside the hub")
    return root


@pytest.fixture()
def hub(hub_dir):
    with serve_hub(hub_dir, page_size=2) as server:
        yield server


def api_for(server) -> HfApi:
    return HfApi(endpoint=server.url, token=False)


def test_list_models_follows_link_pagination(hub):
    ids = [m.id for m in api_for(hub).list_models(filter="timm")]
    assert ids == TIMM_REPOS
    pages = [r for r in hub.request_log if r.startswith("GET /api/models?")]
    assert len(pages) == 3  # 5 repos, 2 per page
    assert "cursor=2" in pages[1] and "cursor=4" in pages[2]


def test_list_models_limit_stops_early(hub):
    ids = [m.id for m in api_for(hub).list_models(filter="timm", limit=3)]
    assert ids == TIMM_REPOS[:3]
    assert len([r for r in hub.request_log if r.startswith("GET /api/models?")]) == 2


def test_list_models_filter_author_search_and_items(hub):
    api = api_for(hub)
    assert [m.id for m in api.list_models()] == [*TIMM_REPOS[:4], "gamma/encoder", "other/bert"]
    assert [m.id for m in api.list_models(filter=["timm", "clothes"])] == ["beta/three"]
    assert [m.id for m in api.list_models(filter="dataset:fashion_mnist")] == ["beta/three"]
    assert [m.id for m in api.list_models(author="alpha")] == ["alpha/one", "alpha/two"]
    assert [m.id for m in api.list_models(search="THR")] == ["beta/three"]
    (three,) = api.list_models(search="three", full=True, cardData=True)
    assert three.author == "beta" and len(three.sha) == 40 and three.last_modified is not None
    assert {"timm", "image-classification", "clothes"} <= set(three.tags)
    assert three.pipeline_tag == "image-classification" and three.library_name == "timm"
    assert {s.rfilename for s in three.siblings} == {"README.md", "config.json", "model.safetensors", "extra/notes.txt"}
    assert three.card_data.datasets == ["fashion_mnist"]
    (enc,) = api.list_models(search="encoder")
    assert enc.pipeline_tag == "image-feature-extraction"


def test_list_models_sort_last_modified(hub, hub_dir):
    for i, repo in enumerate(TIMM_REPOS):
        for f in (hub_dir / repo).rglob("*"):
            os.utime(f, (1_700_000_000 + i * 1000,) * 2)
    ids = [m.id for m in api_for(hub).list_models(filter="timm", sort="last_modified")]
    assert ids == TIMM_REPOS[::-1]


def test_model_info_sha_is_content_hash_and_changes(hub, hub_dir):
    api = api_for(hub)
    info = api.model_info("alpha/one", files_metadata=True)
    assert info.sha == HubFolder(hub_dir).repo("alpha/one").sha
    assert api.model_info("alpha/one", revision=info.sha).sha == info.sha
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["model.safetensors"] == (hub_dir / "alpha/one/model.safetensors").stat().st_size
    weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == sha256_file(hub_dir / "alpha/one/model.safetensors")
    assert api.model_info("alpha/two").sha != info.sha  # different weights, different commit

    (hub_dir / "alpha/one/config.json").write_text('{"architecture": "test_resnet", "num_classes": 3, "x": 1}')
    new = api.model_info("alpha/one")
    assert new.sha != info.sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alpha/one", revision=info.sha)


def test_repo_tree(hub, hub_dir):
    api = api_for(hub)
    flat = {e.path: e for e in api.list_repo_tree("beta/three")}
    assert set(flat) == {"README.md", "config.json", "model.safetensors", "extra"}
    assert type(flat["extra"]).__name__ == "RepoFolder"
    assert flat["model.safetensors"].lfs.sha256 == sha256_file(hub_dir / "beta/three/model.safetensors")
    assert flat["config.json"].lfs is None and flat["config.json"].size == (hub_dir / "beta/three/config.json").stat().st_size
    deep = {e.path for e in api.list_repo_tree("beta/three", recursive=True)}
    assert "extra/notes.txt" in deep
    assert [e.path for e in api.list_repo_tree("beta/three", path_in_repo="extra")] == ["extra/notes.txt"]


def test_hf_hub_download_pinned_revision(hub, hub_dir, tmp_path):
    sha = api_for(hub).model_info("beta/three").sha
    path = hf_hub_download("beta/three", "model.safetensors", revision=sha, endpoint=hub.url, token=False,
                           cache_dir=tmp_path / "cache")
    assert sha in path  # the snapshot folder is named after the commit
    assert sha256_file(path) == sha256_file(hub_dir / "beta/three/model.safetensors")
    nested = hf_hub_download("beta/three", "extra/notes.txt", revision=sha, endpoint=hub.url, token=False,
                             cache_dir=tmp_path / "cache")
    assert open(nested).read() == "nested file"
    snap = snapshot_download("alpha/one", endpoint=hub.url, token=False, cache_dir=tmp_path / "cache")
    assert sorted(os.listdir(snap)) == ["config.json", "model.safetensors"]


def test_resolve_headers_and_range(hub, hub_dir):
    sha = api_for(hub).model_info("alpha/one").sha
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    conn.request("HEAD", "/alpha/one/resolve/main/model.safetensors")
    r = conn.getresponse()
    r.read()
    weights = hub_dir / "alpha/one/model.safetensors"
    assert r.status == 200 and r.getheader("X-Repo-Commit") == sha
    assert r.getheader("ETag") == f'"{sha256_file(weights)}"'
    assert int(r.getheader("Content-Length")) == weights.stat().st_size
    assert not any(k.lower().startswith("x-xet") for k in r.headers)  # plain HTTP download, never Xet
    conn.request("GET", f"/alpha/one/resolve/{sha}/model.safetensors", headers={"Range": "bytes=8-15"})
    r = conn.getresponse()
    assert r.status == 206 and r.read() == weights.read_bytes()[8:16]
    conn.close()


@pytest.mark.parametrize("path", [
    "/alpha/one/resolve/main/../../../secret.txt",
    "/alpha/one/resolve/main/%2E%2E/%2E%2E/%2E%2E/secret.txt",
    "/alpha/one/resolve/main/..%2F..%2F..%2Fsecret.txt",
    "/alpha/..%2F..%2Fsecret.txt/resolve/main/x",
    "/api/models/alpha/..%2F../tree/main",
    "/api/models/alpha/one/tree/main/..%2F..%2F..",
])
def test_path_traversal_refused(hub, path):
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 400
    assert b"outside the hub" not in body


def test_error_headers_cannot_be_injected(hub):
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    conn.request("GET", "/alpha/one/resolve/main/x%0D%0AX-Injected:%20yes%C3%A9")
    r = conn.getresponse()
    r.read()
    conn.close()
    assert r.status == 404 and r.getheader("X-Error-Code") == "EntryNotFound"
    assert r.getheader("X-Injected") is None and "\n" not in r.getheader("X-Error-Message")


def test_errors_are_translated_to_hub_error(hub):
    api = api_for(hub)
    with pytest.raises(HubError, match="repository not found") as e:
        with hub_errors("model info"):
            api.model_info("nobody/nothing")
    assert isinstance(e.value.__cause__, RepositoryNotFoundError)
    with pytest.raises(HubError, match="revision not found") as e:
        with hub_errors("model info"):
            api.model_info("alpha/one", revision="0" * 40)
    assert isinstance(e.value.__cause__, RevisionNotFoundError)
    with pytest.raises(HubError, match="file not found") as e:
        with hub_errors("download"):
            hf_hub_download("alpha/one", "missing.bin", endpoint=hub.url, token=False)
    assert isinstance(e.value.__cause__, RemoteEntryNotFoundError)
    assert isinstance(e.value, OSError)  # callers that only know OSError still catch it


def test_stop_releases_the_port(hub_dir):
    server = serve_hub(hub_dir)
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/api/models")


def test_a_broken_repo_is_skipped_logged_and_reported(hub_dir, caplog):
    """serve-hub degrades per repo: the others keep working, the broken one is named in X-Skipped-Repos."""
    write_tiny_repo(hub_dir / "bad/deep-json", seed=9)
    (hub_dir / "bad/deep-json/config.json").write_text('{"architecture": "x", "y": ' + "[" * 100_000 + "]" * 100_000 + "}")
    write_tiny_repo(hub_dir / "bad/undescribable", seed=10)
    # A file name that is not UTF-8: the repo cannot be described (its sha cannot be computed).
    fd = os.open(os.fsencode(hub_dir / "bad/undescribable") + b"/bad\xff.txt", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    with serve_hub(hub_dir) as server:
        ids = [m.id for m in api_for(server).list_models()]
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/api/models")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and "bad/undescribable" in resp.getheader("X-Skipped-Repos", "")
        conn.request("GET", "/api/models/bad/undescribable")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 500  # answered, not dropped
        assert api_for(server).model_info("alpha/one").sha
    assert "bad/deep-json" in ids and "alpha/one" in ids and "bad/undescribable" not in ids
    assert any("skipping repo bad/undescribable" in r.getMessage() for r in caplog.records)
