"""The red-team suite: a generator of hostile repos and a loopback hub that injects faults.

:func:`build_suite` writes one repo per attack under ``root/rt/`` (tiny real
timm repos from :func:`plugin.demo.hub.write_tiny_repo`, with one thing made
hostile each) and returns the :class:`Attack` records, each with the category
its first scan must end in. :class:`FaultyHandler` serves that folder like
:mod:`crawler.hub.server`, but the fault repos (``rt/fault-*``) get 500s,
429s, resets, truncation, wrong bytes, stalls and slow drips, and the listing
itself carries a pagination loop and injected entries (bad ids, a quoted sha,
a duplicate, a non-object).

Every pickle payload, if it ever ran, writes the file named by
``$DOMAIN_FINDER_PAYLOAD_MARKER`` (:data:`plugin.demo.hub.PAYLOAD_MARKER_ENV`).
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from crawler.hub.server import Handler, model_json
from plugin.demo.hub import PAYLOAD_MARKER_ENV, write_tiny_repo, write_unsafe_pickle

OWNER = "rt"
BENIGN = f"{OWNER}/aaa-benign"  # first in the listing: the one the SIGKILL test interrupts
PY_WRITE = ("import os, pathlib\n"
            f"p = os.environ.get({PAYLOAD_MARKER_ENV!r})\n"
            "p and pathlib.Path(p).write_text('payload ran')\n")
SH_WRITE = f'echo ran > "${PAYLOAD_MARKER_ENV}"'


@dataclass(frozen=True)
class Attack:
    """One attack: the repo (or listing entry) it lives in and the category its first scan ends in.

    ``expect`` is a category, or ``investigate`` / ``none`` (no run: an entry
    merged into another, or a listing-wide fault). ``live`` says the payload
    runs when loaded unsafely (checked by the test, so the attacks are real).
    """

    name: str
    family: str
    repo: str
    expect: str
    live: bool = False


# -- pickle payloads --------------------------------------------------------------
class _Reduce:
    """Pickles to ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_save(path: Path, obj) -> None:
    import torch

    torch.save(obj, str(path))


def _raw(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _p0(s: str) -> bytes:
    """A protocol-0 unicode literal (``V`` opcode; no newlines in ``s``)."""
    return b"V" + s.encode("raw_unicode_escape") + b"\n"


def _u(s: str) -> bytes:
    """A ``BINUNICODE`` literal."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _sbu(s: str) -> bytes:
    """A ``SHORT_BINUNICODE`` literal."""
    return b"\x8c" + bytes([len(s)]) + s.encode()


def _pickle_payloads(sd: dict) -> dict:
    """name -> (writer(path), live): each writes a ``pytorch_model.bin``."""
    import marshal
    import os as os_mod
    import pty
    import runpy
    import subprocess
    import webbrowser

    code = marshal.dumps(compile(PY_WRITE, "payload", "exec"))
    cmd = SH_WRITE
    return {
        "os.system": (lambda p: _torch_save(p, {"state_dict": sd, "x": _Reduce(os_mod.system, cmd)}), True),
        "builtins.exec": (lambda p: write_unsafe_pickle(p, sd), True),
        "builtins.eval": (lambda p: _torch_save(p, {"x": _Reduce(eval, f"exec({PY_WRITE!r})")}), True),
        "subprocess.call": (lambda p: _torch_save(p, {"x": _Reduce(subprocess.call, ["sh", "-c", cmd])}), True),
        "runpy._run_code": (lambda p: _torch_save(p, {"x": _Reduce(runpy._run_code, PY_WRITE, {})}), True),
        "pty.spawn": (lambda p: _torch_save(p, {"x": _Reduce(pty.spawn, ["sh", "-c", cmd])}), True),
        "webbrowser.open": (lambda p: _torch_save(p, {"x": _Reduce(webbrowser.open, "file:///etc/hostname")}), False),
        # importlib.import_module + operator.attrgetter, in protocol 0 text: no "os.system" global anywhere.
        "importlib+operator": (lambda p: _raw(p, b"coperator\nattrgetter\n(" + _p0("system") + b"tR(cimportlib\n"
                                              b"import_module\n(" + _p0("os") + b"tRtR(" + _p0(cmd) + b"tR."), True),
        # marshal.loads + types.FunctionType: code built from bytes, called with no global names involved.
        "marshal+FunctionType": (lambda p: _raw(p, b"\x80\x03ctypes\nFunctionType\ncmarshal\nloads\n"
                                                + b"B" + struct.pack("<I", len(code)) + code
                                                + b"\x85R}\x86R)R."), True),
        "protocol-0 GLOBAL": (lambda p: _raw(p, b"cos\nsystem\n(" + _p0(cmd) + b"tR."), True),
        "STACK_GLOBAL": (lambda p: _raw(p, pickle.dumps(_Reduce(exec, PY_WRITE), protocol=4)), True),
        # Memo confusion: harmless names memoised first, then overwritten with PUT before STACK_GLOBAL reads them.
        "memo confusion": (lambda p: _raw(p, b"\x80\x04" + b"".join(_sbu(x) + b"\x94" for x in (
                                              "collections", "OrderedDict", "builtins", "exec"))  # memo 0..3
                                          + b"h\x02q\x00h\x03q\x01"  # memo 0 <- builtins, memo 1 <- exec
                                          + b"0" * 6 + b"h\x00h\x01\x93(" + _u(PY_WRITE) + b"tR."), True),
        "legacy torch format": (lambda p: _legacy(p, sd), True),
        "nested zip": (lambda p: _nested_zip(p, sd), False),
        "renamed data.PKL": (lambda p: _renamed_member(p, sd), False),
        "zip bomb": (lambda p: _zip_bomb(p), False),
    }


def _legacy(path: Path, sd: dict) -> None:
    import torch

    torch.save({"state_dict": sd, "x": _Reduce(exec, PY_WRITE)}, str(path), _use_new_zipfile_serialization=False)


def _rewrite_zip(path: Path, sd: dict, rename) -> None:
    buf = path.with_suffix(".tmp")
    write_unsafe_pickle(buf, sd)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(rename(info.filename), src.read(info))
    buf.unlink()


def _renamed_member(path: Path, sd: dict) -> None:
    _rewrite_zip(path, sd, lambda n: n[:-len("data.pkl")] + "data.PKL" if n.endswith("/data.pkl") else n)


def _nested_zip(path: Path, sd: dict) -> None:
    inner = path.with_name("inner.bin")
    write_unsafe_pickle(inner, sd)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        z.writestr("archive/inner.pt", inner.read_bytes())
    inner.unlink()


def _zip_bomb(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        z.writestr("archive/data/0", b"\0" * (96 * 2**20))  # ~100 KB on disk, 96 MiB inflated


# -- the suite ----------------------------------------------------------------------
def _tiny(root: Path, name: str, **kw) -> Path:
    return write_tiny_repo(root / OWNER / name, seed=len(name), **kw)


def _config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def _truncate_weights(folder: Path) -> None:
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


FAULTS = {  # repo name -> (fault, category of the first scan)
    "fault-http500": ("http500", "hub-error"),
    "fault-flaky500": ("flaky500", "hub-error"),  # 500 during the first pass only: retried, then judged
    "fault-ratelimit-short": ("ratelimit-short", "failed-corrupt"),  # waits 1 s as told, then succeeds
    "fault-ratelimit-long": ("ratelimit-long", "hub-error"),  # Retry-After 3600 s: refused at once, no stall
    "fault-reset": ("reset", "hub-error"),
    "fault-truncated": ("truncated", "hub-error"),
    "fault-wrong-bytes": ("wrong-bytes", "hub-error"),
    "fault-stall": ("stall", "timeout"),
    "fault-drip": ("drip", "timeout"),
    "fault-head-lies": ("head-lies", "hub-error"),  # HEAD says 1,000 bytes, GET sends 1.5 MB
    "fault-card-50gb": ("card-50gb", "resource-limit"),
    "fault-card-truncated": ("card-truncated", "hub-error"),
}


def build_suite(root: str | Path) -> list[Attack]:
    """Writes every hostile repo under ``root``; returns the attacks (at least 30)."""
    import torch
    from safetensors.torch import load_file

    root = Path(root)
    attacks: list[Attack] = []
    benign = _tiny(root, "aaa-benign")
    attacks.append(Attack("benign control", "control", BENIGN, "investigate"))
    sd = {k: v for k, v in load_file(str(benign / "model.safetensors")).items()}

    for name, (writer, live) in _pickle_payloads(sd).items():
        slug = "pickle-" + "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())
        folder = _tiny(root, slug)
        (folder / "model.safetensors").unlink()
        writer(folder / "pytorch_model.bin")
        attacks.append(Attack(name, "pickle", f"{OWNER}/{slug}",
                              "resource-limit" if name == "zip bomb" else "refused-unsafe", live))

    configs = {
        "config-deep-json": ("resource-limit", lambda f: (f / "config.json").write_text(
            '{"architecture": "test_resnet", "num_classes": 3, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")),
        "config-huge-int": ("resource-limit", lambda f: (f / "config.json").write_text(
            '{"architecture": "test_resnet", "num_classes": ' + "9" * 5000 + "}")),
        "config-num-classes-10m": ("resource-limit", lambda f: _config(f, num_classes=10_000_000)),
        "config-input-size-1024": ("resource-limit", lambda f: _config(f, pretrained_cfg={
            **json.loads((f / "config.json").read_text())["pretrained_cfg"], "input_size": [3, 1024, 1024]})),
        "config-img-size-32768": ("resource-limit", lambda f: _config(f, model_args={"img_size": 32768})),
        "config-checkpoint-path": ("refused-unsafe", lambda f: _config(f, model_args={"checkpoint_path": "/etc/hostname"})),
        "config-cfg-overlay-file": ("refused-unsafe", lambda f: _config(
            f, model_args={"pretrained_cfg_overlay": {"file": "/etc/hostname"}})),
        "config-json-list": ("failed-corrupt", lambda f: (f / "config.json").write_text('["architecture"]')),
        # A Trainer fine-tune of a timm model: transformers hands its model_args to timm.create_model.
        "config-timm-wrapper-checkpoint-path": ("refused-unsafe", lambda f: _config(
            f, architectures=["TimmWrapperForImageClassification"], model_type="timm_wrapper",
            model_args={"checkpoint_path": "/etc/hostname"})),
        "config-5mib-string": ("resource-limit", lambda f: _config(f, junk="x" * (5 * 2**20))),
    }
    for name, (expect, mutate) in configs.items():
        folder = _tiny(root, name)
        mutate(folder)
        attacks.append(Attack(name, "config", f"{OWNER}/{name}", expect))

    # Weights: broken safetensors, and files that are not files.
    folder = _tiny(root, "weights-truncated")
    _truncate_weights(folder)
    attacks.append(Attack("truncated safetensors", "weights", f"{OWNER}/weights-truncated", "failed-corrupt"))
    folder = _tiny(root, "weights-header-lies")
    w = folder / "model.safetensors"
    w.write_bytes(struct.pack("<Q", 2**60) + w.read_bytes()[8:])
    attacks.append(Attack("safetensors header size lie", "weights", f"{OWNER}/weights-header-lies", "failed-corrupt"))
    folder = _tiny(root, "weights-symlink")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to("/etc/passwd")
    attacks.append(Attack("weights symlinked out of the repo", "weights", f"{OWNER}/weights-symlink", "failed-corrupt"))
    folder = _tiny(root, "weights-fifo")
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    attacks.append(Attack("weights file is a FIFO", "weights", f"{OWNER}/weights-fifo", "failed-corrupt"))

    # Cards (weights truncated, so nothing spawns a worker after the card was scored).
    cards = {
        "card-comment-bomb": ("failed-corrupt", "# x\n" + "<!--" * 48_000),
        "card-3mib": ("resource-limit", "word " * (3 * 2**20 // 5)),
        "card-yaml-bomb": ("failed-corrupt", "---\na: &a [x, x, x, x, x, x, x, x, x]\n"
                           + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)},"
                                     f" *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                                     for i in range(9)) + "datasets: *j\n---\nNo prose.\n"),
        "card-yaml-deep": ("failed-corrupt", "---\nx: " + "[" * 5000 + "]" * 5000 + "\n---\nHi.\n"),
    }
    for name, (expect, text) in cards.items():
        folder = _tiny(root, name, card=text)
        _truncate_weights(folder)
        attacks.append(Attack(name, "card", f"{OWNER}/{name}", expect))

    # Hub faults, served by FaultyHandler (weights truncated: a fault that lets the bytes through ends corrupt).
    for name, (fault, expect) in FAULTS.items():
        folder = _tiny(root, name)
        _truncate_weights(folder)
        if fault.startswith("card"):
            (folder / "README.md").write_text("---\nlibrary_name: timm\n---\n")
        attacks.append(Attack(f"hub: {fault}", "hub", f"{OWNER}/{name}", expect))

    # Listing faults (injected by FaultyHandler into /api/models).
    for entry in INJECTED:
        attacks.append(Attack(f"listing: {entry['why']}", "listing", str(entry.get("id"))[:200],
                              "none" if entry["why"] == "duplicate entry" else "invalid-repo"))
    attacks.append(Attack("listing: entry not an object", "listing", NON_OBJECT_REPO, "invalid-repo"))
    attacks.append(Attack("listing: Link pagination loop", "listing", "(listing)", "hub-error"))
    return attacks


NON_OBJECT = ["not", "an", "object"]
NON_OBJECT_REPO = f"<entry {str(NON_OBJECT)[:60]}>"  # how crawler.hub.hf names an entry that is not an object
_QUOTE_SHA = "0123456789abcdef0123456789abcdef0123'\" OR 1=1 --"
INJECTED = [
    {"why": "quote in sha", "id": f"{OWNER}/injected-sha", "sha": _QUOTE_SHA},
    {"why": "filter injection in id", "id": f"{OWNER}/x' or tags.`a` != '", "sha": "a" * 40},
    {"why": "path traversal id", "id": "../../etc/passwd", "sha": "b" * 40},
    {"why": "id too long", "id": f"{OWNER}/" + "n" * 200, "sha": "c" * 40},
    {"why": "non-string id", "id": 12345, "sha": "d" * 40},
    {"why": "duplicate entry", "id": BENIGN, "sha": None},  # the benign repo again: listed once per scan
]


# -- the faulty hub ------------------------------------------------------------------
class FaultyHandler(Handler):
    """:mod:`crawler.hub.server`'s handler with faults for ``rt/fault-*`` and a hostile listing.

    ``server.pass_no`` (set by the test) switches the one-pass faults off.
    """

    def _route(self) -> None:
        url = urlsplit(self.path)
        segs = [unquote(s) for s in url.path.split("/")[1:]]
        if self.command == "GET" and segs == ["api", "models"]:
            self.server.request_log.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
            return self._hostile_listing(url)
        if len(segs) >= 5 and segs[2] == "resolve" and segs[0] == OWNER and segs[1] in FAULTS:
            fault = FAULTS[segs[1]][0]
            name = "/".join(segs[4:])
            is_weights = name.endswith((".safetensors", ".bin"))
            if (is_weights and not fault.startswith("card")) or (name == "README.md" and fault.startswith("card")):
                if self._fault(fault, segs):
                    return
        return super()._route()

    do_GET = do_HEAD = _route

    def _hostile_listing(self, url) -> None:
        params = parse_qs(url.query, keep_blank_values=True)
        repos = self.hub.query(params.get("filter", []))
        items = [model_json(r, card_data=True) for r in repos]
        benign = next((i for i in items if i["id"] == BENIGN), None)
        for entry in INJECTED:
            if entry["why"] == "duplicate entry":
                if benign is not None:
                    items.append(dict(benign))
            else:
                items.append({"id": entry["id"], "modelId": entry["id"], "sha": entry["sha"], "tags": ["timm"],
                              "siblings": [{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}]})
        items.append(list(NON_OBJECT))
        host = self.headers.get("Host")
        # The next page is this very page: a client that follows it loops forever.
        self._json(items, {"Link": f'<http://{host}{self.path}>; rel="next"'})

    def _fault(self, fault: str, segs: list[str]) -> bool:
        """Serves ``fault`` for this request; False to serve normally."""
        if self.command == "HEAD":
            if fault == "head-lies":
                self._send(200, b"", {"X-Linked-Size": "1000", "X-Repo-Commit": "0" * 40}, length=1000)
                return True
            return False
        counts = self.server.fault_counts  # type: ignore[attr-defined]
        with self.server.fault_lock:  # type: ignore[attr-defined]
            counts[fault] = counts.get(fault, 0) + 1
            n = counts[fault]
        pass_no = getattr(self.server, "pass_no", 1)
        repo = self.hub.repo(f"{segs[0]}/{segs[1]}")
        f = repo.file("/".join(segs[4:])) if repo else None
        data = (self.hub.root / repo.repo_id / f.path).read_bytes() if f else b""
        if fault == "http500" or (fault == "flaky500" and pass_no == 1):
            self._send(500, b'{"error": "internal"}')
        elif fault == "ratelimit-short" and n == 1:
            self._send(429, b"{}", {"Retry-After": "1"})
        elif fault == "ratelimit-long":
            self._send(429, b"{}", {"Retry-After": "3600"})
        elif fault == "reset":
            self.close_connection = True
            self.connection.shutdown(2)
        elif fault in ("truncated", "card-truncated"):
            self._bytes(data[: len(data) // 2], len(data), f)
        elif fault == "wrong-bytes":
            self._bytes(bytes(b ^ 0xFF for b in data[:64]) + data[64:], len(data), f)
        elif fault == "stall":
            self._headers(len(data), f)
            self.wfile.write(data[:100])
            self.wfile.flush()
            time.sleep(4)
            self.close_connection = True
        elif fault == "drip":
            self._headers(len(data), f)
            try:
                for i in range(0, 40):
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.25)
            except OSError:
                pass
            self.close_connection = True
        elif fault == "head-lies":
            self._bytes(data, len(data), f)
        elif fault == "card-50gb":
            self._headers(50 * 2**30, f)
            self.close_connection = True
        else:
            return False
        return True

    def _headers(self, length: int, f) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if f is not None:
            self.send_header("ETag", f'"{f.etag}"')
        self.end_headers()

    def _bytes(self, data: bytes, declared: int, f) -> None:
        self._headers(declared, f)
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


def serve_faulty(root: str | Path):
    """A running faulty hub over ``root`` (stop it with ``.stop()`` or ``with``)."""
    from crawler.hub.server import serve_hub

    server = serve_hub(root, handler=FaultyHandler)
    server._server.fault_counts = {}  # type: ignore[attr-defined]
    server._server.fault_lock = threading.Lock()  # type: ignore[attr-defined]
    server._server.pass_no = 1  # type: ignore[attr-defined]
    return server


def check_payloads_live(attacks: list[Attack], root: Path, marker_dir: Path, python: str) -> dict[str, bool]:
    """Loads every ``live`` payload *unsafely* in a child process; returns which ones ran.

    This proves the attacks are real: each would execute if a loader trusted it.
    """
    import subprocess

    marker_dir.mkdir(parents=True, exist_ok=True)
    todo = [[a.name, str(root / a.repo / "pytorch_model.bin")] for a in attacks if a.live]
    code = (
        "import json, os, sys, torch\n"
        "todo = json.loads(sys.argv[1]); out = sys.argv[2]\n"
        "for i, (name, path) in enumerate(todo):\n"
        "    os.environ[%r] = os.path.join(out, str(i))\n"
        "    try:\n"
        "        torch.load(path, weights_only=False)\n"
        "    except BaseException:\n"
        "        pass\n" % PAYLOAD_MARKER_ENV)
    subprocess.run([python, "-c", code, json.dumps(todo), str(marker_dir)], capture_output=True, timeout=300,
                   stdin=subprocess.DEVNULL)
    return {name: (marker_dir / str(i)).exists() for i, (name, _) in enumerate(todo)}


__all__ = ["Attack", "BENIGN", "FAULTS", "FaultyHandler", "INJECTED", "build_suite", "check_payloads_live",
           "serve_faulty"]
