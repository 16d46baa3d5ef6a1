"""The model-format registry: timm, transformers and ONNX read safely; everything else named, never guessed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.demo.hf_repos import (PAYLOAD_MARKER_ENV, tiny_resnet, tiny_vit, trainer_card, write_onnx_repo,
                                  write_remote_code_repo, write_transformers_repo, write_unsupported_repo)
from plugin.demo.hub import write_tiny_repo, write_unsafe_pickle
from plugin.models import formats
from plugin.models.formats import RemoteCodeError, UnsupportedFormatError, detect

VIT_CFG = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "id2label": {"0": "a", "1": "b"}}


def _images(n=12, seed=0):
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return [photos[i % 4] if i < 4 else rng.integers(0, 256, (37 + i, 50, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("names, config, expect", [
    # (files, config) -> (format, supported, refused, encoder); the repo's name plays no part.
    ({"config.json", "model.safetensors"}, VIT_CFG, ("transformers", True, False, False)),
    ({"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors"}, VIT_CFG, ("transformers", True, False, False)),
    ({"config.json", "pytorch_model.bin"}, VIT_CFG, ("transformers", True, False, False)),
    ({"config.json", "model.safetensors"}, {**VIT_CFG, "auto_map": {"AutoModel": "m.X"}},
     ("transformers", True, True, False)),
    ({"config.json", "model.safetensors"}, {**VIT_CFG, "architectures": ["NovelNetForImageClassification"]},
     ("transformers", True, True, False)),
    ({"config.json", "model.safetensors"}, {**VIT_CFG, "model_type": "novelnet"}, ("transformers", True, True, False)),
    ({"config.json", "model.safetensors"}, {**VIT_CFG, "architectures": ["ViTModel"]},
     ("transformers", True, False, True)),
    # Two LABEL_n placeholders: a 2-class classifier with no names, never an encoder.
    ({"config.json", "model.safetensors"}, {**VIT_CFG, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}},
     ("transformers", True, False, False)),
    ({"config.json", "tf_model.h5"}, VIT_CFG, ("transformers-tf", False, False, False)),
    ({"config.json", "model.safetensors"}, {"architecture": "resnet18", "num_classes": 3}, ("timm", True, False, False)),
    ({"config.json", "model.safetensors"}, {"architecture": "resnet18", "num_classes": 0}, ("timm", True, False, True)),
    ({"model.onnx", "config.json"}, VIT_CFG, ("onnx", True, False, False)),
    # A config with its weights missing is a broken repo of that format (failed-corrupt later), not "unsupported".
    ({"config.json"}, {"architecture": "resnet18", "num_classes": 3}, ("timm", True, False, False)),
    ({"config.json", "preprocessor_config.json"}, VIT_CFG, ("transformers", True, False, False)),
    ({"model.keras", "README.md"}, None, ("keras", False, False, False)),
    ({"tf_model.h5"}, None, ("keras", False, False, False)),
    ({"export.pkl"}, None, ("fastai", False, False, False)),
    ({"model.pt"}, None, ("pytorch-pickle", False, False, False)),
    ({"README.md"}, None, ("none", False, False, False)),
])
def test_format_comes_from_files_and_config(names, config, expect):
    found = detect(names, config)
    assert (found.format, found.supported, found.refused, found.encoder) == expect
    if not found.supported or found.refused or found.encoder:
        assert found.reason  # every repo we do not investigate says why


def test_transformers_safetensors_sharded_and_pickled_load_the_same_model(tmp_path):
    from plugin.models.preprocessing import processor_preprocessing, read_processor_config
    import torch

    model = tiny_vit(["tabby", "espresso", "rocket"], seed=3)
    plain = write_transformers_repo(tmp_path / "plain", model, card=trainer_card("plain"))
    sharded = write_transformers_repo(tmp_path / "sharded", model, max_shard_size="20KB")
    pickled = write_transformers_repo(tmp_path / "pickled", model, pickle=True)
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 1 and not list(pickled.glob("*.safetensors"))
    images = _images()
    pre = processor_preprocessing(read_processor_config(plain / "preprocessor_config.json"))
    with torch.inference_mode():
        want = model(pixel_values=pre(images)).logits.argmax(1).numpy()
    for folder in (plain, sharded, pickled):
        bb = formats.load_blackbox(folder, batch_size=5)
        assert bb.info.label_names == ("tabby", "espresso", "rocket") and bb.num_classes == 3
        assert np.array_equal(bb.predict(images), want), folder.name
        assert bb.input_spec.size == (32, 32)  # the batched device pipeline applies unchanged
        assert np.array_equal(bb.predict_tensor(pre(images)), want)


def test_loading_offline_gives_the_environment_back(tmp_path, monkeypatch):
    """The Hub switches are on while transformers loads and as they were afterwards (a later listing must work)."""
    import os

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DISABLE_SAFETENSORS_CONVERSION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    folder = write_transformers_repo(tmp_path / "r", tiny_vit(["tabby", "espresso"], seed=1))
    assert formats.load_blackbox(folder).num_classes == 2
    assert "HF_HUB_OFFLINE" not in os.environ and "DISABLE_SAFETENSORS_CONVERSION" not in os.environ
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0"


def test_label_placeholders_name_nothing_but_still_count_as_classes(tmp_path):
    folder = write_transformers_repo(tmp_path / "r", tiny_vit([f"LABEL_{i}" for i in range(10)]))
    info = formats.preflight(folder)
    assert info.num_classes == 10 and info.label_names is None and info.architecture == "ViTForImageClassification"


def test_pickled_payload_in_a_transformers_repo_is_refused_before_it_runs(tmp_path, monkeypatch):
    folder = write_transformers_repo(tmp_path / "evil", tiny_vit(["a", "b"]), pickle=True)
    write_unsafe_pickle(folder / "pytorch_model.bin", tiny_vit(["a", "b"]).state_dict())
    marker = tmp_path / "ran"
    monkeypatch.setenv(PAYLOAD_MARKER_ENV, str(marker))
    with pytest.raises(UnsafeCheckpointError):
        formats.preflight(folder)
    with pytest.raises(UnsafeCheckpointError):
        formats.load_blackbox(folder)
    assert not marker.exists()


def test_remote_code_is_refused_and_never_imported(tmp_path, monkeypatch):
    folder = write_remote_code_repo(tmp_path / "evil")
    marker = tmp_path / "ran"
    monkeypatch.setenv(PAYLOAD_MARKER_ENV, str(marker))
    found = formats.detect_folder(folder)
    assert found.refused and "auto_map" in found.reason
    for step in (formats.preflight, formats.load_blackbox):
        with pytest.raises(RemoteCodeError, match="remote code"):
            step(folder)
    # Even transformers itself, asked the way our loader asks, refuses to import it.
    from transformers import AutoConfig

    with pytest.raises(ValueError):
        AutoConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    assert not marker.exists()


def test_unsupported_formats_are_named_not_failed(tmp_path):
    for fmt in ("keras", "fastai", "pytorch-pickle"):
        folder = write_unsupported_repo(tmp_path / fmt, fmt)
        with pytest.raises(UnsupportedFormatError) as e:
            formats.load_blackbox(folder)
        assert e.value.format == fmt and isinstance(e.value, CheckpointError)


def test_timm_folders_load_as_before(tmp_path):
    folder = write_tiny_repo(tmp_path / "timm", num_classes=3, seed=1)
    bb = formats.load_blackbox(folder)
    assert formats.detect_folder(folder).format == "timm" and bb.num_classes == 3
    assert len(bb.predict(_images(4))) == 4


@pytest.mark.parametrize("kind", ["vit", "vit-bicubic", "convnext", "deit", "beit", "old-vit-feature-extractor"])
def test_preprocessing_equals_the_repos_own_image_processor(tmp_path, kind):
    from transformers import AutoImageProcessor, BeitImageProcessor, ConvNextImageProcessor, DeiTImageProcessor
    from transformers import ViTImageProcessor

    from plugin.models.preprocessing import processor_preprocessing, read_processor_config

    folder = tmp_path / kind
    processor = {
        "vit": lambda: ViTImageProcessor(size={"height": 32, "width": 32}),
        "vit-bicubic": lambda: ViTImageProcessor(size={"height": 48, "width": 40}, resample=3,
                                                 image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
        "convnext": lambda: ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875),
        "deit": lambda: DeiTImageProcessor(size={"height": 72, "width": 72}, crop_size={"height": 64, "width": 64}),
        "beit": lambda: BeitImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False),
        "old-vit-feature-extractor": lambda: ViTImageProcessor(size={"height": 40, "width": 40}),
    }[kind]()
    processor.save_pretrained(folder)
    if kind == "old-vit-feature-extractor":  # the 2021 file: an int size and feature_extractor_type
        cfg = json.loads((folder / "preprocessor_config.json").read_text())
        cfg.pop("image_processor_type")
        cfg.update(size=40, feature_extractor_type="ViTFeatureExtractor")
        (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    ours = processor_preprocessing(read_processor_config(folder / "preprocessor_config.json"))
    images = _images(8)
    theirs = AutoImageProcessor.from_pretrained(folder)(images, return_tensors="pt")["pixel_values"]
    got = ours(images)
    assert got.shape == theirs.shape
    assert float((got - theirs).abs().max()) < 1e-4


def test_preprocessing_we_cannot_reproduce_is_refused():
    from plugin.models.preprocessing import processor_preprocessing

    with pytest.raises(CheckpointError, match="resample"):
        processor_preprocessing({"size": {"height": 32, "width": 32}, "resample": 1})
    with pytest.raises(CheckpointError, match="no fixed input size"):
        processor_preprocessing({"size": {"shortest_edge": 32}, "do_center_crop": False})


def test_onnx_export_gives_the_same_labels_and_custom_ops_are_refused(tmp_path):
    import onnx

    model = tiny_resnet(["sandal", "sneaker", "boot"], seed=2)
    src = write_transformers_repo(tmp_path / "torch", model)
    from transformers import ConvNextImageProcessor

    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(src)
    exported = write_onnx_repo(tmp_path / "onnx", src)
    assert formats.detect_folder(exported).format == "onnx"
    images = _images()
    ours = formats.load_blackbox(exported, batch_size=5)
    assert ours.info.label_names == ("sandal", "sneaker", "boot")
    assert np.array_equal(ours.predict(images), formats.load_blackbox(src).predict(images))
    graph = onnx.load(str(exported / "model.onnx"))
    graph.graph.node[0].domain = "com.example.custom"
    graph.opset_import.add(domain="com.example.custom", version=1)
    onnx.save(graph, str(exported / "model.onnx"))
    with pytest.raises(UnsafeCheckpointError, match="custom-op domain"):
        formats.load_blackbox(exported)
