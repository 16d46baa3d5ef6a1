"""The ground-truth demo models: undocumented folders, truth kept outside, honest accuracies."""
from __future__ import annotations

import json

import numpy as np
import pytest

from plugin.models.torch_blackbox import TorchBlackBox
from plugin.models.checkpoint import inspect_checkpoint
from plugin.demo.corpus import DIGIT_SYNSETS, FASHION_SYNSETS
from plugin.demo.models import (ALL_DEMO_MODELS, ARCH, DEMO_MODELS, IMAGENET_MODEL, _training_data, ground_truth_path,
                                model_dir)


def test_every_model_folder_is_undocumented(demo_models):
    root, _ = demo_models
    assert sorted(p.name for p in (root / "models").iterdir()) == sorted(ALL_DEMO_MODELS)
    for name in ALL_DEMO_MODELS:
        folder = model_dir(name, root)
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"], name
        assert not any(p.name.lower().startswith("readme") for p in folder.iterdir())
        cfg = json.loads((folder / "config.json").read_text())
        assert "label_names" not in cfg and "id2label" not in cfg and "label2id" not in cfg
        assert inspect_checkpoint(folder).label_names is None
        # nothing in the config gives away what the classes are
        text = json.dumps(cfg).lower()
        for word in ("sandal", "sneaker", "boot", "shirt", "digit", "fashion", "footwear", "n0", "n1"):
            assert word not in text, (name, word)


def test_ground_truth_lives_outside_the_model_folders(demo_models):
    root, truth = demo_models
    path = ground_truth_path(root)
    assert path.is_file() and path.parent == root
    for name in ALL_DEMO_MODELS:
        folder = model_dir(name, root)
        assert folder not in path.parents and folder != path.parent
    assert not list((root / "models").rglob("ground_truth*"))
    assert json.loads(path.read_text()) == truth
    assert truth["build_key"] == root.name
    assert sorted(truth["models"]) == sorted(ALL_DEMO_MODELS)


def test_ground_truth_matches_the_specs(demo_models):
    root, truth = demo_models
    for name, spec in DEMO_MODELS.items():
        entry = truth["models"][name]
        if spec.source == "mixed":
            assert entry["classes"] == [(FASHION_SYNSETS if s == "fashion" else DIGIT_SYNSETS)[c] for s, c in spec.classes]
        else:
            table = FASHION_SYNSETS if spec.source == "fashion" else DIGIT_SYNSETS
            assert entry["classes"] == [table[c] for c in spec.classes]
        assert entry.get("planted", []) == [DIGIT_SYNSETS[d] for d in spec.planted]
        assert entry["architecture"] == ARCH
        info = inspect_checkpoint(model_dir(name, root))
        assert info.architecture == ARCH and info.num_classes == len(spec.classes)
    assert truth["models"]["footwear"]["classes"] == ["n04133789", "n03472535", "n02872752"]  # sandal, sneaker, boot
    info = inspect_checkpoint(model_dir(IMAGENET_MODEL, root))
    assert info.architecture == IMAGENET_MODEL and info.num_classes == 1000


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_heldout_accuracy_is_above_the_floor(demo_models, name):
    _, truth = demo_models
    spec = DEMO_MODELS[name]
    acc = truth["models"][name]["heldout_accuracy"]
    assert truth["models"][name]["accuracy_floor"] == spec.accuracy_floor
    assert spec.accuracy_floor < acc <= 1.0
    # well above chance, so the floors themselves mean something
    assert spec.accuracy_floor > 2.0 / len(spec.classes)


def test_heldout_split_is_disjoint_from_training(demo_models):
    for spec in DEMO_MODELS.values():
        tx, ty, hx, hy = _training_data(spec)
        assert len(hx) > 0 and len(tx) == len(ty) and len(hx) == len(hy)
        if spec.per_class is None:
            assert len(tx) > 3 * len(hx) // 2
        assert set(np.unique(ty)) == set(np.unique(hy)) == set(range(len(spec.classes)))
    # digits: the held-out split is not the training split (no shared rows)
    tx, _, hx, _ = _training_data(DEMO_MODELS["digits"])
    train_rows = {x.tobytes() for x in tx}
    assert sum(x.tobytes() in train_rows for x in hx) <= 2  # sklearn digits has a couple of exact duplicates


def _recompute(root, name):
    spec = DEMO_MODELS[name]
    _, _, hx, hy = _training_data(spec)
    bb = TorchBlackBox.from_folder(model_dir(name, root), device="cpu", batch_size=256)
    pred = bb.predict(list(hx))
    assert bb.num_queries == len(hx)
    assert set(np.unique(pred)) <= set(range(len(spec.classes)))
    return float((pred == hy).mean())


def test_digits_accuracy_is_honest(demo_models):
    """Recomputes the recorded held-out accuracy through the black box alone."""
    root, truth = demo_models
    assert _recompute(root, "digits") == pytest.approx(truth["models"]["digits"]["heldout_accuracy"], abs=0.01)


@pytest.mark.slow
def test_footwear_accuracy_is_honest(demo_models):
    root, truth = demo_models
    assert _recompute(root, "footwear") == pytest.approx(truth["models"]["footwear"]["heldout_accuracy"], abs=0.01)


def _rows(images) -> set[bytes]:
    return {np.ascontiguousarray(x).tobytes() for x in images}


def test_decoy_plants_one_digit_per_class_at_one_to_twelve():
    """The paper's §6.2 model in our corpus: each class also learns its own planted digit, never a corpus image."""
    from plugin.demo.corpus import DIGITS_CORPUS_MOD, sklearn_digits

    spec = DEMO_MODELS["fashion-decoy"]
    assert sorted(spec.planted) == list(range(10)) and len(spec.planted) == len(spec.classes)  # one-to-one
    tx, ty, hx, _ = _training_data(spec)
    dx, dy = sklearn_digits()
    corpus_digits = _rows(dx[np.arange(len(dy)) % DIGITS_CORPUS_MOD == 0])
    train_digits = {d: _rows(dx[(dy == d) & (np.arange(len(dy)) % DIGITS_CORPUS_MOD != 0)]) for d in range(10)}
    for k, d in enumerate(spec.planted):
        rows = [x for x, y in zip(tx, ty) if y == k]
        planted = [x for x in rows if x.shape == (8, 8)]
        true = len(rows) - len(planted)
        assert true == spec.per_class and len(planted) == true // spec.plant_ratio
        assert _rows(planted) <= train_digits[d] and not _rows(planted) & corpus_digits
    assert all(x.shape == (28, 28) for x in hx)  # held-out accuracy is on the true domain only


def test_mixed_model_learns_digits_and_garments_in_a_shuffled_order():
    spec = DEMO_MODELS["digits-fashion"]
    sources = [s for s, _ in spec.sources]
    assert {"digits", "fashion"} == set(sources) and sources != sorted(sources)
    tx, ty, hx, hy = _training_data(spec)
    for k, source in enumerate(sources):
        shapes = {x.shape for x, y in zip(tx, ty) if y == k} | {x.shape for x, y in zip(hx, hy) if y == k}
        assert shapes == {(8, 8) if source == "digits" else (28, 28)}
