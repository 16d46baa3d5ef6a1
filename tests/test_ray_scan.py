"""``scan --backend ray`` on a real two-node Ray cluster and a real ``mlflow server``, both on loopback.

The cluster is two raylets on this machine (``ray start --head`` plus
``ray start --address``), one CPU each, under a temp dir of their own; the
tracking server is ``mlflow server`` on SQLite with proxied artifacts. The
second node is SIGKILLed while it investigates: its task must finish on the
head, into the same run. Cleanup kills only the processes these fixtures
started (never ``ray stop --force``, which ends every Ray process on the
machine).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from plugin.demo import hub as demo_hub
from plugin.outcomes import INVESTIGATE, T_NODE, T_TASK_ATTEMPT, TAG_PREFIX

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ("r/alpha", "r/beta")  # one per node
# GCS declares a SIGKILLed raylet dead after about 3 s instead of about 30 s.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
               "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
# A token in ~/.ray (left by any earlier local Ray) turns token auth on for `ray start --head` only; this
# loopback cluster, its driver and this test process all run without it.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pids_matching(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (our temp dir, or one raylet's port)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as fh:
                    if text in fh.read().decode(errors="replace"):
                        out.append(int(d))
            except OSError:
                pass
    return [p for p in out if p != os.getpid()]


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _kill(pids) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_port(port: int, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _ray_start(args: list[str], env: dict) -> None:
    done = subprocess.run([str(BIN / "ray"), "start", *args], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"ray start {args[0]} failed: {done.stderr[-1500:]}")


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster and an ``mlflow server``; yields a dict of their addresses."""
    temp = tempfile.mkdtemp(prefix="dfray-", dir="/tmp")  # short: Ray's unix sockets live under it
    head, nm1, nm2, agent1, agent2, mlf, dash = _free_ports(7)
    saved = {k: os.environ.get(k) for k in NO_AUTH}
    os.environ.update(NO_AUTH)
    env = {**os.environ, **FAST_HEALTH, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
    server = None
    try:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{temp}/mlflow.db", "--serve-artifacts",
             "--artifacts-destination", f"{temp}/artifacts", "--host", "127.0.0.1", "--port", str(mlf),
             "--workers", "1"], env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=temp, start_new_session=True)
        _ray_start(["--head", "--port", str(head), "--include-dashboard", "false", "--temp-dir", temp,
                    "--node-manager-port", str(nm1), "--dashboard-port", str(dash),
                    "--dashboard-agent-listen-port", str(agent1), *common], env)
        _ray_start(["--address", f"127.0.0.1:{head}", "--node-manager-port", str(nm2),
                    "--dashboard-agent-listen-port", str(agent2), *common], env)
        _wait_port(mlf, 60)
        yield {"address": f"127.0.0.1:{head}", "tracking": f"http://127.0.0.1:{mlf}", "node2_port": nm2,
               "env": env, "temp": temp}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)  # the server and its uvicorn worker: their own session
        _kill(p for q in _pids_matching(temp) for p in _descendants(q))  # only what we started: it names our dir
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def tiny_hub(tmp_path):
    hub = tmp_path / "hub"
    for i, repo in enumerate(MODELS):
        demo_hub.write_tiny_repo(hub / repo, seed=10 + i)
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(yaml.safe_dump({"images_per_leaf": 3, "transforms_per_image": 1}))
    return hub, recipe


def _runs(tracking: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=tracking)
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(exps, "", run_view_type=ViewType.ALL, max_results=1000) if exps else []


def _scan_cli(hub, recipe, cluster, *extra) -> subprocess.Popen:
    env = {**cluster["env"], "MLFLOW_TRACKING_URI": cluster["tracking"]}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "plugin.cli", "scan", "--source", f"dir:{hub}", "--recipe",
                             str(recipe), "--no-progress", "--backend", "ray", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_refusals_before_any_run(cluster, tiny_hub, tmp_path, monkeypatch, capsys):
    """A bad address, and a store only this machine can write to with a cluster: one line each, no run created."""
    from plugin.cli import main

    hub, recipe = tiny_hub
    (closed,) = _free_ports(1)
    argv = ["scan", "--source", f"dir:{hub}", "--recipe", str(recipe), "--backend", "ray", "--ray-address"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cluster["tracking"])
    mlflow.set_tracking_uri(cluster["tracking"])
    assert main([*argv, f"127.0.0.1:{closed}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster answers" in err[0], err
    local = f"sqlite:///{tmp_path / 'local.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local)
    mlflow.set_tracking_uri(local)
    assert main([*argv, cluster["address"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mlflow server" in err[0], err
    assert _runs(cluster["tracking"]) == [] and not (tmp_path / "local.db").exists()


def test_node_killed_mid_investigation_loses_nothing(cluster, tiny_hub, monkeypatch):
    import ray

    hub, recipe = tiny_hub
    tracking = cluster["tracking"]
    ray.init(address=cluster["address"], include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    (node2,) = [n["NodeID"] for n in ray.nodes() if n["NodeManagerPort"] == cluster["node2_port"]]
    (head,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != node2]
    proc = _scan_cli(hub, recipe, cluster, "--ray-address", cluster["address"])
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline and proc.poll() is None:
        for r in _runs(tracking):
            t = r.data.tags
            if r.info.status == "RUNNING" and t.get(T_NODE) == node2 and t.get(TAG_PREFIX + "status") == "running":
                victim = r.info.run_id  # investigating on node 2 right now
        time.sleep(0.3)
    assert victim, "no model was investigated on the second node"
    (raylet,) = [p for p in _pids_matching(f"--node_manager_port={cluster['node2_port']}")
                 if "raylet" in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")]
    _kill(_descendants(raylet))  # the node, its workers and their investigation processes
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]

    runs = [r for r in _runs(tracking) if TAG_PREFIX + "model_id" in r.data.tags]
    by_repo: dict[str, list] = {}
    for r in runs:
        by_repo.setdefault(r.data.tags[TAG_PREFIX + "model_id"], []).append(r)
    assert sorted(by_repo) == sorted(MODELS)  # none lost
    for repo, rs in by_repo.items():  # exactly one run each, FINISHED: no retry left a second run or an orphan
        assert [r.info.status for r in rs] == ["FINISHED"], (repo, [(r.info.status, r.data.tags) for r in rs])
    retried = mlflow.MlflowClient(tracking_uri=tracking).get_run(victim)
    assert retried.info.status == "FINISHED" and retried.data.tags[T_NODE] == head
    assert retried.data.tags[T_TASK_ATTEMPT] == "2"  # the same run, investigated again on the head

    # A rescan (in this process, on the head alone) adds nothing.
    from crawler.scan import ALREADY_AUDITED, scan
    from plugin.core.recipe import Recipe

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    mlflow.set_tracking_uri(tracking)
    again = scan(f"dir:{hub}", recipe=Recipe.load(str(recipe)), backend="ray", ray_address=cluster["address"])
    assert set(again.outcomes().values()) == {ALREADY_AUDITED} and len(again.rows) == len(MODELS)
    assert len([r for r in _runs(tracking) if TAG_PREFIX + "model_id" in r.data.tags]) == len(MODELS)
    assert INVESTIGATE not in again.outcomes().values()


def test_without_ray_installed_one_line_says_how(monkeypatch):
    from crawler.scan.options import ScanOptions
    from crawler.scan.ray_backend import check_address
    from plugin.core.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(ConfigError, match=r"pip install \.\[ray\]"):
        check_address(ScanOptions(backend="ray"))
