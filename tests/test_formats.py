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


def _theirs_and_ours(folder, images):
    """The repo's own processor, our :class:`Preprocessing` and the search's device pipeline on ``images``."""
    from transformers import AutoImageProcessor

    from plugin.core.blackbox import InputSpec
    from plugin.core.recipe import Recipe
    from plugin.core.transforms import expand_to_input
    from plugin.models.preprocessing import processor_preprocessing, read_processor_config

    ours = processor_preprocessing(read_processor_config(folder / "preprocessor_config.json"))
    processor = AutoImageProcessor.from_pretrained(folder)
    theirs = np.stack([processor([im], return_tensors="pt")["pixel_values"][0].numpy() for im in images])
    spec = InputSpec(size=ours.input_size[1:], crop_pct=ours.crop_pct, crop_mode=ours.crop_mode,
                     interpolation=ours.interpolation, mean=ours.mean, std=ours.std, crop_offset=ours.crop_offset,
                     bgr=ours.bgr)
    device = expand_to_input([(images, 0, 0)], Recipe(transforms_per_image=0), spec).numpy()
    return theirs, ours(images).numpy(), device


@pytest.mark.parametrize("kind, settings", [
    # The Hub's own settings of the families whose processors do more than resize, crop and normalise.
    ("MobileViTImageProcessor", {"size": {"shortest_edge": 288}, "crop_size": {"height": 256, "width": 256}}),
    ("EfficientNetImageProcessor", {"size": {"height": 224, "width": 224}, "resample": 0,
                                    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.4785, 0.4733, 0.4743]}),
    ("EfficientNetImageProcessor", {"size": {"height": 64, "width": 64}, "rescale_offset": True,
                                    "rescale_factor": 1 / 127.5, "do_normalize": False}),
    ("LevitImageProcessor", {"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}}),
    ("MobileNetV2ImageProcessor", {}),  # 256 then 224: odd leftovers, where transformers floors the crop
    ("PoolFormerImageProcessor", {"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}}),
    ("ConvNextImageProcessor", {"size": {"shortest_edge": 224}, "image_mean": [0.485, 0.456, 0.406]}),
])
def test_processors_that_do_more_are_reproduced_to_the_pixel(tmp_path, kind, settings):
    import transformers

    getattr(transformers, kind)(**settings).save_pretrained(tmp_path)
    images = _images(8) + [np.random.default_rng(1).integers(0, 256, (82, 71, 3), dtype=np.uint8)]
    theirs, ours, device = _theirs_and_ours(tmp_path, images)
    assert ours.shape == theirs.shape == device.shape
    assert float(np.abs(ours - theirs).max()) < 1e-4
    assert float(np.abs(device - theirs).max()) < 1e-4


def test_every_classifier_processor_is_reproduced_or_refused(tmp_path):
    """Each image processor an image-classification model type of the installed transformers uses, at its
    defaults: our two pipelines give its pixels, or the config is refused by name; never a guess."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    from plugin.models.preprocessing import REPRODUCED, processor_preprocessing, read_processor_config

    kinds = sorted({IMAGE_PROCESSOR_MAPPING_NAMES[m]["torchvision"] for m in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
                    if "torchvision" in IMAGE_PROCESSOR_MAPPING_NAMES.get(m, {})})
    assert {"ViTImageProcessor", "ConvNextImageProcessor", "MobileViTImageProcessor"} <= set(kinds)
    images = [np.random.default_rng(k).integers(0, 256, hw + (3,), dtype=np.uint8)
              for k, hw in enumerate([(82, 71), (89, 68), (300, 451)])]
    reproduced, refused = [], []
    for kind in kinds:
        folder = tmp_path / kind
        getattr(transformers, kind)().save_pretrained(folder)
        try:
            processor_preprocessing(read_processor_config(folder / "preprocessor_config.json"))
        except CheckpointError as e:
            refused.append(kind)
            assert "preprocessor_config.json" in str(e)
            continue
        theirs, ours, device = _theirs_and_ours(folder, images)
        assert ours.shape == theirs.shape, kind
        assert float(np.abs(ours - theirs).max()) < 1e-4, kind
        assert float(np.abs(device - theirs).max()) < 1e-4, kind
        reproduced.append(kind)
    assert set(reproduced) <= REPRODUCED
    assert {"ViTImageProcessor", "ConvNextImageProcessor", "EfficientNetImageProcessor", "LevitImageProcessor",
            "MobileNetV2ImageProcessor"} <= set(reproduced)
    assert "PPLCNetImageProcessor" not in kinds or "PPLCNetImageProcessor" in refused


def test_a_mobilevit_repo_is_investigated_on_the_bgr_input_it_was_trained_on(tmp_path):
    import torch
    from transformers import AutoImageProcessor, MobileViTConfig, MobileViTForImageClassification
    from transformers import MobileViTImageProcessor

    torch.manual_seed(0)
    labels = ["sandal", "sneaker", "boot"]
    model = MobileViTForImageClassification(MobileViTConfig(
        image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], num_attention_heads=2,
        num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})).eval()
    processor = MobileViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    folder = write_transformers_repo(tmp_path / "mobilevit", model, processor)
    bb = formats.load_blackbox(folder)
    assert bb.input_spec.bgr and bb.input_spec.crop_offset == "floor"
    seen = []  # what the loaded model really receives, through predict and through the search's device pipeline
    bb._model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    images = _images(12)
    pixels = AutoImageProcessor.from_pretrained(folder)(images, return_tensors="pt")["pixel_values"]
    bb.predict(images)
    from plugin.core.recipe import Recipe
    from plugin.core.transforms import expand_to_input

    bb.predict_tensor(expand_to_input([(images, 0, 0)], Recipe(transforms_per_image=0), bb.input_spec))
    assert len(seen) == 2
    for got in seen:
        assert float((got.float() - pixels).abs().max()) < 1e-4


def test_a_trainer_finetune_of_a_timm_model_loads_with_its_pretrained_cfg(tmp_path):
    """``model_type: timm_wrapper``: labels as timm's ``label_names``, preprocessing from ``pretrained_cfg`` in
    ``config.json`` (no ``preprocessor_config.json``), as ``TimmWrapperImageProcessor`` reads them."""
    import timm
    import torch
    from transformers import AutoImageProcessor, TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(0)
    pcfg = {k: v for k, v in timm.create_model("test_resnet", pretrained=False).pretrained_cfg.items()
            if k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")}
    labels = ["sandal", "sneaker", "boot"]
    model = TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="test_resnet", pretrained_cfg=pcfg, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)})).eval()
    folder = tmp_path / "timm-wrapper"
    model.save_pretrained(folder)
    assert not (folder / "preprocessor_config.json").exists()
    bb = formats.load_blackbox(folder)
    assert bb.info.label_names == tuple(labels) and bb.num_classes == 3
    seen = []
    bb._model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    images = _images(6)
    bb.predict(images)
    from PIL import Image

    theirs = AutoImageProcessor.from_pretrained(folder)([Image.fromarray(im) for im in images])["pixel_values"]
    assert seen[0].shape == theirs.shape
    assert float((seen[0] - theirs).abs().mean()) < 1e-3  # timm's PIL transform against our tensor one
    # An architecture timm would fetch from the Hub, model_args naming a file (timm.create_model would read it),
    # or no pretrained_cfg: refused before anything is built.
    cfg = json.loads((folder / "config.json").read_text())
    for bad, error in (({"architecture": "hf-hub:someone/net"}, "not a timm model that timm builds locally"),
                       ({"model_args": {"checkpoint_path": "/etc/hostname"}}, "checkpoint_path"),
                       ({"pretrained_cfg": None}, "no pretrained_cfg")):
        (folder / "config.json").write_text(json.dumps({**cfg, **bad}))
        with pytest.raises(CheckpointError, match=error):
            formats.load_blackbox(folder)
    with pytest.raises(UnsafeCheckpointError):  # the scan files it as refused-unsafe
        (folder / "config.json").write_text(json.dumps({**cfg, "model_args": {"checkpoint_path": "/etc/hostname"}}))
        formats.preflight(folder)


def test_processor_defaults_come_from_its_class_and_unknown_steps_are_refused(tmp_path):
    import transformers

    from plugin.models.preprocessing import processor_preprocessing

    # A hand-written config that leaves the class's defaults out: MobileViT normalises nothing and flips to BGR.
    mobilevit = processor_preprocessing({"image_processor_type": "MobileViTImageProcessor",
                                         "size": {"shortest_edge": 288}, "crop_size": {"height": 256, "width": 256}})
    assert mobilevit.bgr and mobilevit.mean == (0.0, 0.0, 0.0) and mobilevit.std == (1.0, 1.0, 1.0)
    assert mobilevit.interpolation == "bicubic"  # MobileViT's own default, not bilinear
    convnext = processor_preprocessing({"image_processor_type": "ConvNextImageProcessor", "size": 224})
    assert convnext.interpolation == "bicubic" and convnext.crop_mode == "center"
    assert convnext.mean == tuple(transformers.ConvNextImageProcessor.image_mean)
    with pytest.raises(CheckpointError, match="do_warp_to_fisheye is a step we do not reproduce"):
        processor_preprocessing({"size": {"height": 32, "width": 32}, "do_warp_to_fisheye": True})
    with pytest.raises(CheckpointError, match="'PPLCNetImageProcessor' is not one we reproduce"):
        processor_preprocessing({"image_processor_type": "PPLCNetImageProcessor", "size": {"height": 256, "width": 256}})
    # An old feature-extractor name reads as the class it became.
    assert processor_preprocessing({"feature_extractor_type": "LevitFeatureExtractor", "size": 224,
                                    "crop_size": 224}).crop_pct == pytest.approx(224 / 256.5)


@pytest.mark.parametrize("export", ["fp16", "channels-last", "wrong-size"])
def test_onnx_exports_in_fp16_or_channels_last_are_fed_as_they_expect(tmp_path, export):
    """An fp16 export takes float16, a TensorFlow-style export (N, H, W, 3); an input the preprocessing cannot
    feed is refused before the run starts (not an onnxruntime error on the first batch)."""
    import copy
    import shutil

    import torch
    from transformers import ConvNextImageProcessor

    model = tiny_resnet(["sandal", "sneaker", "boot"], seed=2)
    src = write_transformers_repo(tmp_path / "torch", model)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(src)

    class Export(torch.nn.Module):
        def __init__(self, m, nhwc):
            super().__init__()
            self.m, self.nhwc = m, nhwc

        def forward(self, x):
            return self.m(pixel_values=x.permute(0, 3, 1, 2) if self.nhwc else x).logits

    net = copy.deepcopy(model).half() if export == "fp16" else model
    x = {"fp16": torch.zeros(1, 3, 32, 32, dtype=torch.float16), "channels-last": torch.zeros(1, 32, 32, 3),
         "wrong-size": torch.zeros(1, 3, 48, 48)}[export]
    folder = tmp_path / export
    folder.mkdir()
    torch.onnx.export(Export(net, export == "channels-last"), x, str(folder / "model.onnx"), dynamo=False,
                      input_names=["pixel_values"], output_names=["logits"],
                      dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(src / name, folder / name)
    if export == "wrong-size":
        with pytest.raises(CheckpointError, match=r"image input \['\?', 3, 48, 48\] does not take"):
            formats.preflight(folder)
        return
    images = _images()
    assert np.array_equal(formats.load_blackbox(folder).predict(images), formats.load_blackbox(src).predict(images))


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
