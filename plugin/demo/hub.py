"""A small hub of demo repos, with the outcome a crawl should reach on each.

Served by :mod:`crawler.hub.server`, it exercises every branch of a scan:
undocumented classifiers to investigate (the demo models of
:mod:`plugin.demo.models`, whose ground truth is known), documented models to
skip, a pickle that would run code when loaded, a truncated safetensors file
and a feature encoder without a head, all in timm's layout; and the Hub's
commonest kind: a transformers Trainer fine-tune on the footwear classes
(:func:`plugin.demo.hf_repos.footwear_finetune`, with a Trainer card), its
ONNX export, and a repo that asks for remote code, refused unread.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from crawler.hub.server import HubServer, serve_hub
from crawler.hub import HfSource, HubModel, ModelSource
from plugin.core.settings import cache_root
from plugin.demo import hf_repos
from plugin.demo.hf_repos import PAYLOAD_MARKER_ENV  # noqa: F401 - one marker for pickles and remote code
from plugin.outcomes import (FAILED_CORRUPT, INVESTIGATE, OUTCOMES, REFUSED_REMOTE_CODE, REFUSED_UNSAFE,  # noqa: F401
                             SKIPPED_DOCUMENTED, SKIPPED_ENCODER)
from plugin.demo.models import (ALL_DEMO_MODELS, DEMO_PRETRAINED_CFG, LABELLED_MODELS, build_demo_models, build_key,
                                 model_dir)

OWNER = "demo"

# The pickle payload (and the remote code) touches the file named by PAYLOAD_MARKER_ENV, if it is set:
# harmless by default, and a test can prove that loading never ran it.
_MARKER_FILE = ".demo-hub.json"  # hidden, so the server does not list it

# A README that is only metadata, as timm's push_to_hub writes when nobody edits it.
FRONT_MATTER_ONLY = "---\nlibrary_name: timm\ntags:\n- image-classification\n- timm\n---\n"
FASHION_CARD = """---
library_name: timm
tags:
- image-classification
- timm
datasets:
- fashion_mnist
license: mit
---
# Fashion-MNIST ResNet

A small ResNet (timm `test_resnet`) trained from scratch on the Fashion-MNIST
training split (50,000 grayscale 28x28 images of Zalando clothing articles,
upscaled to 32x32 RGB) for three epochs with AdamW and random shifts. It
predicts the ten Fashion-MNIST classes: T-shirt/top, trouser, pullover, dress,
coat, sandal, shirt, sneaker, bag and ankle boot. Held-out accuracy is about
89% on the last 10,000 training images, which were never used for training.
"""
DIGITS_CARD = """---
library_name: timm
tags:
- image-classification
- timm
---
# Handwritten digit classifier

This model was trained on the UCI optical recognition of handwritten digits
data set (the 8x8 images shipped with scikit-learn as `load_digits`), upscaled
to 32x32 RGB. It recognises the digits zero to nine, in order; the class names
are in `config.json`. Training ran for thirty epochs; about one image in five
was held out to measure accuracy, which is above 90%.
"""

ENCODER_CARD = "---\nlibrary_name: timm\npipeline_tag: image-classification\n---\n"

# repo name -> (expected outcome, demo model whose weights it reuses)
REPOS: dict[str, tuple[str, str]] = {
    "fashion10": (INVESTIGATE, "fashion10"),
    "footwear": (INVESTIGATE, "footwear"),
    "upper-body": (INVESTIGATE, "upper-body"),
    "digits": (INVESTIGATE, "digits"),
    "tf_efficientnet_lite0": (INVESTIGATE, "tf_efficientnet_lite0"),
    "fashion-documented": (SKIPPED_DOCUMENTED, "fashion10"),
    "digits-labelled": (SKIPPED_DOCUMENTED, "digits"),
    # label names in config.json but no README: still undocumented (card score 0.8)
    "footwear-labelled": (INVESTIGATE, "footwear-labelled"),
    "pickled-payload": (REFUSED_UNSAFE, "footwear"),
    "truncated-weights": (FAILED_CORRUPT, "upper-body"),
    "resnet-encoder": (SKIPPED_ENCODER, "fashion10"),
    # The Hub's commonest undocumented kind, with the footwear ground truth (same classes, same order).
    "footwear-trainer": (INVESTIGATE, "footwear"),
    "footwear-onnx": (INVESTIGATE, "footwear"),
    "remote-code": (REFUSED_REMOTE_CODE, "footwear"),
}
HF_LAYOUT = {"footwear-trainer", "footwear-onnx", "remote-code"}  # built by plugin.demo.hf_repos
# Undocumented repos that get a front-matter-only README; the others get none.
_FRONT_MATTER_ONLY = {"footwear", "digits", "truncated-weights"}


def repo_id(name: str) -> str:
    return f"{OWNER}/{name}"


def expected_outcomes() -> dict[str, str]:
    """``repo_id -> expected outcome`` for every demo hub repo."""
    return {repo_id(n): outcome for n, (outcome, _) in REPOS.items()}


def source_models() -> dict[str, str]:
    """``repo_id -> demo model name`` whose ground truth applies (investigated repos only).

    A labelled copy (:data:`plugin.demo.models.LABELLED_MODELS`) maps to the
    model whose weights it copies, the key of its truth in ``truth["models"]``.
    """
    return {repo_id(n): LABELLED_MODELS.get(model, (model,))[0] for n, (outcome, model) in REPOS.items()
            if outcome == INVESTIGATE}


def hub_key() -> str:
    """Changes whenever this recipe or the demo models' recipe changes."""
    return hashlib.sha256(Path(__file__).read_bytes() + Path(hf_repos.__file__).read_bytes()
                          + build_key().encode()).hexdigest()[:12]


class _Payload:
    """Pickles to a call of ``exec``: what a malicious checkpoint looks like."""

    CODE = ("import os, pathlib\n"
            f"p = os.environ.get({PAYLOAD_MARKER_ENV!r})\n"
            "p and pathlib.Path(p).write_text('payload ran')\n")

    def __reduce__(self):
        return (exec, (self.CODE,))


def write_unsafe_pickle(path: Path, state_dict: dict) -> None:
    """Writes a torch checkpoint whose unpickling would run :class:`_Payload`.

    The tensors are real, so only a scan of the pickle's imports can tell it
    from an honest ``pytorch_model.bin``.
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": dict(state_dict), "training_args": _Payload()}, str(path))


def write_tiny_repo(folder: str | Path, num_classes: int = 3, seed: int = 0, weights: str = "safetensors",
                    card: str | None = None, label_names: list[str] | None = None,
                    architecture: str = "test_resnet") -> Path:
    """Writes a small real timm repo (``test_resnet``: 1.5 MB) for tests and examples.

    Args:
        folder: the repo folder to create.
        num_classes: 0 writes a head-less encoder.
        seed: weight initialisation seed (different seeds, different shas).
        weights: ``"safetensors"``, ``"pickle"`` (an honest ``pytorch_model.bin``),
            ``"both"``, or ``"unsafe"`` (a pickle carrying :class:`_Payload`).
        card: README.md text, or None for no README.
        label_names: written to ``config.json`` when given.
    """
    import timm
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sd = {k: v.contiguous() for k, v in timm.create_model(architecture, num_classes=num_classes).state_dict().items()}
    if weights in ("safetensors", "both"):
        save_file(sd, str(folder / "model.safetensors"))
    if weights in ("pickle", "both"):
        torch.save(sd, str(folder / "pytorch_model.bin"))
    if weights == "unsafe":
        write_unsafe_pickle(folder / "pytorch_model.bin", sd)
    cfg = {"architecture": architecture, "num_classes": num_classes, "pretrained_cfg": DEMO_PRETRAINED_CFG}
    if label_names is not None:
        cfg["label_names"] = list(label_names)
    _write_config(folder, cfg)
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def _state_dict(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _write_config(folder: Path, cfg: dict) -> None:
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def _build_repo(name: str, model: str, dest: Path) -> None:
    from safetensors.torch import save_file

    src, out = model_dir(model), dest / OWNER / name
    if name in HF_LAYOUT:
        _build_hf_repo(name, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    cfg = _config(src)
    if name == "pickled-payload":
        write_unsafe_pickle(out / "pytorch_model.bin", _state_dict(src))
        _write_config(out, cfg)
        return
    if name == "resnet-encoder":
        import timm

        # The same backbone without its head: timm's num_classes=0 encoder.
        keys = timm.create_model(cfg["architecture"], pretrained=False, num_classes=0).state_dict().keys()
        save_file({k: v.contiguous() for k, v in _state_dict(src).items() if k in keys}, str(out / "model.safetensors"))
        _write_config(out, {**cfg, "num_classes": 0})
        # Published under the classification task anyway, as many encoders on the Hub are: listed, then skipped.
        (out / "README.md").write_text(ENCODER_CARD)
        return
    if name == "truncated-weights":
        data = (src / "model.safetensors").read_bytes()
        (out / "model.safetensors").write_bytes(data[: len(data) // 2])  # an interrupted upload
    else:
        shutil.copyfile(src / "model.safetensors", out / "model.safetensors")
    if name == "digits-labelled":
        cfg = {**cfg, "label_names": [str(i) for i in range(cfg["num_classes"])]}
    _write_config(out, cfg)
    card = {"fashion-documented": FASHION_CARD, "digits-labelled": DIGITS_CARD}.get(name)
    if card is None and name in _FRONT_MATTER_ONLY:
        card = FRONT_MATTER_ONLY
    if card is not None:
        (out / "README.md").write_text(card)


def _build_hf_repo(name: str, out: Path) -> None:
    """The transformers fine-tune (Trainer card), its ONNX export, or the remote-code repo."""
    if name == "remote-code":
        hf_repos.write_remote_code_repo(out, tuple(hf_repos.FOOTWEAR.values()))
        return
    trained = hf_repos.footwear_finetune()
    if name == "footwear-onnx":
        hf_repos.write_onnx_repo(out, trained)
    else:
        shutil.copytree(trained, out)
    card = hf_repos.trainer_card(name, base="microsoft/resnet-18")
    (out / "README.md").write_text(card, encoding="utf-8")


def build_demo_hub(dest: str | Path) -> dict[str, str]:
    """Builds the demo hub under ``dest`` (once); returns :func:`expected_outcomes`.

    Idempotent: a hub already built from the same recipe is left untouched,
    a missing or outdated one is rebuilt in a temporary folder and swapped in.
    Trains the demo models first if they are not cached (about 2 minutes).
    """
    dest = Path(dest)
    key = hub_key()
    marker = dest / _MARKER_FILE
    expected = expected_outcomes()
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("key") == key and all((dest / r).is_dir() for r in expected):
                return expected
        except (json.JSONDecodeError, AttributeError):
            pass  # a damaged marker means an unknown state: rebuild
    truth = build_demo_models(progress=True)
    needed = {m for _, m in REPOS.values()}
    built = set(truth.get("models", {})) | set(truth.get("labelled_models", {}))
    if not needed <= set(ALL_DEMO_MODELS) | set(LABELLED_MODELS) or not needed <= built:
        raise RuntimeError(f"demo models missing from the build: {sorted(needed - built)}")
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, (_, model) in REPOS.items():
        _build_repo(name, model, tmp)
    (tmp / _MARKER_FILE).write_text(json.dumps({"key": key, "expected": expected}, indent=2))
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return expected


def bump_repo(dest: str | Path, repo: str) -> None:
    """Changes one repo harmlessly (a counter in ``config.json``) so its sha changes."""
    folder = Path(dest) / repo
    cfg = _config(folder)
    cfg["revision_counter"] = int(cfg.get("revision_counter", 0)) + 1
    _write_config(folder, cfg)


# -- the demo model source (registered as "demo" through entry points) --------
def demo_hub_root() -> Path:
    """Where the demo hub is cached (under ``DOMAIN_FINDER_CACHE``)."""
    return cache_root() / "demo-hub" / hub_key()


class DemoSource(ModelSource):
    """The demo hub, served on a free loopback port and read through :class:`HfSource`.

    Builds the demo hub on first use (which trains the demo models once).
    Call :meth:`close` (or use ``with``) to stop the server.

    Attributes:
        expected: ``repo_id -> expected scan outcome`` (see :func:`build_demo_hub`).
        server: the running :class:`~crawler.hub.server.HubServer`.
    """

    name = "demo"

    def __init__(self, root: str | Path | None = None, **hf_opts):
        self.root = Path(root) if root is not None else demo_hub_root()
        self.expected = build_demo_hub(self.root)
        self.server: HubServer = serve_hub(self.root)
        try:
            self.hf = HfSource(endpoint=self.server.url, name=self.name, **hf_opts)
        except BaseException:
            self.server.stop()  # a bad option must not leave a server running
            raise

    def list_models(self) -> Iterator[HubModel]:
        return self.hf.list_models()

    def _size(self, model: HubModel, filename: str) -> int | None:
        return self.hf._size(model, filename)

    def _download(self, model: HubModel, filename: str, dest: Path, **limits) -> bool:
        return self.hf._download(model, filename, dest, **limits)

    def close(self) -> None:
        self.server.stop()


def demo_source(arg: str | None, **opts) -> ModelSource:
    return DemoSource(arg or None, **opts)
