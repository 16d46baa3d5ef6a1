"""The benchmark ground truth: few-class models that the defaults were not tuned on.

The demo models (:mod:`plugin.demo.models`) are three fashion models, a digits
model, a decoy and a mixed model. The defaults used to be tuned on those same
17 classes, so the figures that justified them were measured on the data they
were tuned on. This ground truth is larger and split in two halves:

- **tuning** models, on which ``make tune`` chooses knobs;
- **validation** models, on which it reports them (the README quotes these only).

Each model is a 2-, 3-, 5- or 10-class subset of Fashion-MNIST or of the
digits, a confusable set (pullover/coat/shirt), a cross-subtree set
(T-shirt/dress/sandal), a mixed model (digits and garments), or a model whose
domain the corpus lacks: it trains on Fashion-MNIST *train* images (or
non-corpus digits) of classes whose leaves are removed from the corpus it is
searched on (:attr:`GroundTruthSpec.without`), so none of its images, nor any
leaf of its domain, is in the corpus. Every model is trained with two training
seeds, as two machines would. Built once and cached like the demo models
(keyed on the source of this module and of the demo's), and never in CI:
only ``make tune`` (``benchmarks/tune_defaults.py``) builds them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from plugin.core.settings import cache_root
from plugin.demo.corpus import DIGIT_SYNSETS, FASHION_SYNSETS
from plugin.demo.models import ARCH, DEMO_PRETRAINED_CFG, DemoSpec, train_model, write_hub_folder

TRAINING_SEEDS = (0, 1)
TUNING, VALIDATION = "tuning", "validation"
SHOES = tuple(FASHION_SYNSETS[c] for c in (5, 7, 9))  # sandal, sneaker, ankle boot


@dataclass(frozen=True)
class GroundTruthSpec:
    """One ground-truth model: a demo spec, its half, and the leaves its corpus lacks."""

    spec: DemoSpec
    half: str
    kind: str  # subset | confusable | cross-subtree | mixed | lacking
    without: tuple[str, ...] = ()  # leaves removed from the corpus it is searched on

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def single_domain(self) -> bool:
        """One domain (no mixed-domains or decoy flag may fire): everything but the mixed model."""
        return self.kind != "mixed"


def _f(name, classes, half, kind="subset", without=()):
    # As the demo's fashion models are trained: the whole training split of each class, 3 epochs.
    return GroundTruthSpec(DemoSpec(name, "fashion", tuple(classes), 3, 0.5), half, kind, without)


def _d(name, classes, half, kind="subset", without=()):
    return GroundTruthSpec(DemoSpec(name, "digits", tuple(classes), 40, 0.5), half, kind, without)


def _m(name, classes, half):
    return GroundTruthSpec(DemoSpec(name, "mixed", tuple(classes), 4, 0.5, per_class=400), half, "mixed")


# Fashion labels: 0 T-shirt, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 boot.
GROUND_TRUTH: dict[str, GroundTruthSpec] = {g.name: g for g in [
    # tuning half: 11 models, 50 classes
    _f("gt-tshirt-trouser", (0, 1), TUNING),
    _f("gt-pullover-coat-shirt", (2, 4, 6), TUNING, "confusable"),
    _f("gt-fashion5a", (0, 1, 3, 5, 8), TUNING),
    _f("gt-fashion10a", (3, 0, 7, 1, 9, 2, 8, 4, 6, 5), TUNING),
    _d("gt-digits2", (1, 7), TUNING),
    _d("gt-digits5a", (0, 2, 4, 6, 8), TUNING),
    _d("gt-digits10a", (4, 1, 8, 0, 6, 3, 9, 2, 7, 5), TUNING),
    _m("gt-mixed-a", (("digits", 2), ("fashion", 3), ("digits", 5), ("fashion", 9)), TUNING),
    _f("gt-lacking-shoes", (5, 7, 9), TUNING, "lacking", SHOES),
    _f("gt-trouser-sneaker-bag", (1, 7, 8), TUNING, "cross-subtree"),
    _d("gt-digits3a", (0, 5, 8), TUNING),
    # validation half: 11 models, 50 classes
    _f("gt-bag-boot", (8, 9), VALIDATION),
    _f("gt-coat-sandal", (4, 5), VALIDATION),
    _d("gt-digits2b", (2, 6), VALIDATION),
    _f("gt-tshirt-dress-sandal", (0, 3, 5), VALIDATION, "cross-subtree"),
    _f("gt-fashion5b", (2, 4, 6, 7, 9), VALIDATION),
    _f("gt-fashion10b", (9, 8, 7, 6, 5, 4, 3, 2, 1, 0), VALIDATION),
    _d("gt-digits3", (3, 6, 9), VALIDATION),
    _d("gt-digits5b", (1, 3, 5, 7, 9), VALIDATION),
    _d("gt-digits10b", (7, 3, 0, 9, 5, 1, 8, 6, 2, 4), VALIDATION),
    _m("gt-mixed-b", (("fashion", 0), ("digits", 4), ("fashion", 7), ("digits", 8), ("digits", 1)), VALIDATION),
    _d("gt-lacking-digits", (0, 1, 2), VALIDATION, "lacking", tuple(DIGIT_SYNSETS)),
]}


def build_key() -> str:
    """Changes whenever the demo's training code or data change (each model's spec keys its own folder)."""
    import timm
    import torch

    here = Path(__file__)
    src = b"".join((here.parent / f).read_bytes() for f in ("models.py", "corpus.py"))
    return hashlib.sha256(src + torch.__version__.encode() + timm.__version__.encode()).hexdigest()[:12]


def ground_truth_root() -> Path:
    return cache_root() / "ground-truth" / build_key()


def model_name(name: str, seed: int) -> str:
    """The folder of one training seed of a ground-truth model: changing a spec retrains that model only."""
    spec = hashlib.sha256(repr(GROUND_TRUTH[name]).encode()).hexdigest()[:8]
    return f"{name}-s{seed}-{spec}"


def build_ground_truth(progress: bool = True, train: bool = True) -> dict:
    """Trains every model at every training seed once (minutes); later calls read the cache.

    Returns the ground truth: per trained model its classes (synsets), half,
    kind, training seed, the leaves its corpus lacks and its held-out accuracy.
    Models are cached one by one, so an interrupted build resumes; with
    ``train=False`` only the models already built are returned.
    """
    root = ground_truth_root()
    path = root / "ground_truth.json"
    truth = json.loads(path.read_text()) if path.is_file() else {"build_key": root.name, "models": {}}
    # Training seed first, then the smaller models: an interrupted build covers both halves.
    order = sorted(GROUND_TRUTH.values(), key=lambda g: len(g.spec.classes))
    for seed, g in ((seed, g) for seed in TRAINING_SEEDS for g in order):
        name = model_name(g.name, seed)
        if not train or (name in truth["models"] and (root / "models" / name / "config.json").is_file()):
            continue
        if progress:
            print(f"[ground-truth] training {name} ({len(g.spec.classes)} classes)...", flush=True)
        model, acc, secs = train_model(g.spec, seed=seed)
        tmp = root / "models" / f"{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_hub_folder(tmp, ARCH, model.state_dict(), len(g.spec.classes), DEMO_PRETRAINED_CFG)
        shutil.rmtree(root / "models" / name, ignore_errors=True)
        os.replace(tmp, root / "models" / name)
        truth["models"][name] = {"model": g.name, "classes": g.spec.synsets, "half": g.half, "kind": g.kind,
                                 "training_seed": seed, "without": list(g.without),
                                 "heldout_accuracy": round(acc, 4), "build_seconds": round(secs, 1)}
        path.write_text(json.dumps(truth, indent=2))
        if progress:
            print(f"[ground-truth]   {name}: held-out accuracy {acc:.3f} in {secs:.0f} s", flush=True)
    # Only this spec's models: a model whose spec changed was retrained under a new name.
    current = {model_name(g.name, seed) for g in GROUND_TRUTH.values() for seed in TRAINING_SEEDS}
    return {**truth, "models": {n: m for n, m in truth["models"].items() if n in current}}


def ground_truth_dir(name: str) -> Path:
    """The hub-layout folder of a trained ground-truth model (``model_name(name, seed)``)."""
    return ground_truth_root() / "models" / name
