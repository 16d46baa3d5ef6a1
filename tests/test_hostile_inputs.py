"""Hostile inputs, one row of the red-team table each: refused by a named rule, never by luck."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from crawler.cards import assess_documentation, split_front_matter
from crawler.scan import ledger
from crawler.hub import HfSource, ListingError, valid_sha
from crawler.hub import valid_repo_id as valid_hub_repo_id
from plugin import tracking
from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.demo.hub import write_tiny_repo
from plugin.models.checkpoint import load_state_dict, preflight, scan_pickle
from plugin.models.hub_layout import parse_config_text, validate_config
from plugin.models.limits import ResourceLimitError
from plugin.models.pickle_guard import check_checkpoint_pickles
from plugin.outcomes import T_ATTEMPT
from redteam import INJECTED, _pickle_payloads, serve_faulty

ROOT = Path(__file__).resolve().parents[1]
BASE = {"architecture": "test_resnet", "num_classes": 3}


@pytest.fixture(scope="module")
def state_dict():
    import timm

    return timm.create_model("test_resnet", num_classes=3).state_dict()


@pytest.mark.parametrize("name", ["importlib+operator", "marshal+FunctionType", "memo confusion", "renamed data.PKL"])
def test_allowlist_refuses_what_a_denylist_misses(name, state_dict, tmp_path):
    writer, _ = _pickle_payloads(state_dict)[name]
    path = tmp_path / "pytorch_model.bin"
    writer(path)
    with pytest.raises(UnsafeCheckpointError, match=r"imports \w+\.\w+|nested archive") as e:
        check_checkpoint_pickles(path)
    assert "refused by the pickle allowlist" in str(e.value)
    assert not any(ok in str(e.value) for ok in ("collections.OrderedDict", "torch.FloatStorage"))


def test_picklescan_alone_misses_some_payloads(state_dict, tmp_path):
    """Why the allowlist exists: the denylist scanner passes at least one live payload."""
    missed = []
    for name in ("marshal+FunctionType", "memo confusion"):
        path = tmp_path / f"{len(missed)}.bin"
        _pickle_payloads(state_dict)[name][0](path)
        try:
            scan_pickle(path)
            missed.append(name)
        except CheckpointError:
            pass
    assert missed


@pytest.mark.parametrize("variant", ["zip", "legacy", "parameter", "dtypes"])
def test_allowlist_accepts_honest_checkpoints(variant, state_dict, tmp_path):
    import torch

    path = tmp_path / "pytorch_model.bin"
    obj = {"zip": state_dict, "legacy": state_dict,
           "parameter": {"w": torch.nn.Parameter(torch.zeros(2))},
           "dtypes": {"a": torch.zeros(2, dtype=torch.bfloat16), "b": torch.zeros(2, dtype=torch.int64),
                      "c": torch.zeros(2, dtype=torch.bool), "d": torch.zeros(2, dtype=torch.float16)}}[variant]
    torch.save(obj, str(path), _use_new_zipfile_serialization=variant != "legacy")
    assert "torch._utils._rebuild_tensor_v2" in check_checkpoint_pickles(path)
    assert set(load_state_dict(tmp_path, "pytorch_model.bin")) == set(obj)


def test_zip_bomb_refused_before_inflating(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    _pickle_payloads({})["zip bomb"][0](path)
    assert path.stat().st_size < 2**20
    with pytest.raises(ResourceLimitError) as e:
        check_checkpoint_pickles(path)
    assert e.value.limit == "max_inflated_bytes" and e.value.value == 64 * 2**20


@pytest.mark.parametrize("text, limit", [
    ('{"x": ' + "[" * 50_000 + "]" * 50_000 + "}", "max_json_depth"),
    ('{"num_classes": ' + "9" * 5000 + "}", "max_json_int_digits"),
    ('{"s": "' + "x" * 100_000 + '"}', "max_json_string"),
])
def test_config_json_limits(text, limit):
    t = time.time()
    with pytest.raises(ResourceLimitError) as e:
        parse_config_text(text)
    assert e.value.limit == limit and time.time() - t < 5


@pytest.mark.parametrize("change, error, limit", [
    ({"num_classes": 10_000_000}, ResourceLimitError, "max_num_classes"),
    ({"pretrained_cfg": {"input_size": [3, 1024, 1024]}}, ResourceLimitError, "max_input_side"),
    ({"model_args": {"img_size": 32768}}, ResourceLimitError, "max_input_side"),
    ({"model_args": {"checkpoint_path": "/etc/hostname"}}, UnsafeCheckpointError, None),
    ({"model_args": {"pretrained_cfg_overlay": {"file": "/etc/hostname"}}}, UnsafeCheckpointError, None),
    ({"model_args": {"num_heads": 10**6}}, CheckpointError, None),
])
def test_config_caps_before_allocation(change, error, limit):
    with pytest.raises(error) as e:
        validate_config({**BASE, **change})
    if limit:
        assert e.value.limit == limit
    assert validate_config({**BASE, "model_args": {"drop_rate": 0.1, "img_size": 224, "in_chans": 3}})


def test_hostile_model_args_never_reach_timm(tmp_path):
    folder = write_tiny_repo(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_args": {"checkpoint_path": str(folder / "x.pth")}}))
    with pytest.raises(UnsafeCheckpointError, match="checkpoint_path"):
        preflight(folder)


def test_pathological_card_scores_fast_and_yaml_bombs_are_refused():
    t = time.time()
    doc = assess_documentation("# x\n" + "<!--" * 48_000 + "\n" + "[" * 50_000 + "`" * 3, None)
    assert doc.undocumented and time.time() - t < 5  # it took 122 s with the old regexes
    bomb = "---\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)) + "---\n"
    fm = split_front_matter(bomb)
    assert fm.meta is None and "refused" in fm.error
    assert split_front_matter("---\nx: " + "[" * 5000 + "]" * 5000 + "\n---\n").meta is None


def test_repo_id_and_sha_grammar():
    assert all(valid_hub_repo_id(r) for r in ["gpt2", "timm/resnet50.a1_in1k", "a-b/c_d.e"])
    bad = ["../../etc/passwd", "a/b/c", "a--b/c", "a/b.git", "a/" + "n" * 100, "a/b' or '1'='1", "", 12, None, "-a/b"]
    assert not any(valid_hub_repo_id(r) for r in bad)
    assert valid_sha("a" * 40) and not valid_sha("A" * 40) and not valid_sha("a" * 39 + "'")
    with pytest.raises(ValueError):
        ledger.runs_of_key("0", "x' or '1'='1")


def test_pagination_loop_and_injected_entries(tmp_path):
    root = tmp_path / "hub"
    write_tiny_repo(root / "rt" / "aaa-benign", seed=1)
    with serve_faulty(root) as server:
        seen = []
        with pytest.raises(ListingError, match="pagination loop"):
            for m in HfSource(endpoint=server.url, filter=None).list_models():
                seen.append(m)
        requests = [r for r in server.request_log if r.startswith("GET /api/models")]
    assert len(requests) == 1  # the looping Link is never followed
    bad = {m.repo_id: m.category for m in seen if m.error}
    assert {str(e["id"])[:200] for e in INJECTED if e["why"] != "duplicate entry"} <= set(bad)
    assert set(bad.values()) == {"invalid-repo"}
    assert [m.repo_id for m in seen if not m.error] == ["rt/aaa-benign", "rt/aaa-benign"]  # the scan de-duplicates


def test_ledger_permanent_transient_and_limits():
    tracking.init_store()
    c = tracking.client()
    exp, parent = "0", c.create_run("0").info.run_id

    def failed(repo, category, **kw):
        run_id, _ = ledger.claim(exp, parent, repo, "f" * 40, {tracking.T_MODEL_ID: repo, tracking.T_REVISION: "f" * 40},
                                 timeout_s=60)
        ledger.fail(run_id, "boom", category, **kw)
        return ledger.find_audit(exp, repo, "f" * 40, limits={"max_bytes": 1000})

    assert failed("t/unsafe", "refused-unsafe", verified=True) is not None  # a verdict on verified bytes
    assert failed("t/corrupt-unverified", "failed-corrupt", verified=False) is None  # retried: bytes unverified
    assert failed("t/hub", "hub-error") is None  # the very next scan retries
    assert ledger.find_audit(exp, "t/hub", "f" * 40, retry_failed="hub-error") is None
    run_id, _ = ledger.claim(exp, parent, "t/hub", "f" * 40, {}, timeout_s=60)  # the retry supersedes attempt 1
    ledger.fail(run_id, "boom again", "hub-error")
    assert tracking.get_run(run_id).data.tags[T_ATTEMPT] == "2"
    assert ledger.find_audit(exp, "t/hub", "f" * 40) is not None  # attempt 2: backing off
    assert failed("t/big", "resource-limit", limits={"max_bytes": 1000}) is not None  # same limit: waits
    assert ledger.find_audit(exp, "t/big", "f" * 40, limits={"max_bytes": 5000}) is None  # raised: eligible
    assert ledger.find_audit(exp, "t/big", "f" * 40, limits={"max_bytes": None}) is None  # no cap: eligible


RACER = """
import json, sys
from plugin import tracking
from crawler.scan import ledger
tracking.init_store()
c = tracking.client()
parent = c.create_run("0").info.run_id
won = []
for i in range(12):
    repo, sha = f"race/m{i}", f"{i:040x}"
    run_id, _ = ledger.claim("0", parent, repo, sha, {tracking.T_MODEL_ID: repo, tracking.T_REVISION: sha},
                             timeout_s=600)
    if run_id:
        c.set_tag(run_id, tracking.T_STATUS, "finished")
        c.set_terminated(run_id, "FINISHED")
        ledger.release(run_id)
        won.append(i)
c.set_terminated(parent, "FINISHED")
print(json.dumps(won))
"""


def test_two_concurrent_scans_claim_each_model_once(tmp_path):
    """Two processes on one fresh store: the store is created once, and each model is won exactly once."""
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", RACER], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    won = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sorted(won[0] + won[1]) == list(range(12)), won
    finished = [r for r in tracking.client().search_runs(["0"], "attributes.status = 'FINISHED'", max_results=1000)
                if r.data.tags.get(tracking.T_MODEL_ID, "").startswith("race/")]
    assert len(finished) == 12
