"""Hard-label black boxes over real timm checkpoints written to tmp_path."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import skimage.data
import timm
import timm.data
import torch
from PIL import Image
from safetensors.torch import save_file

from plugin.core.blackbox import BlackBox, CountingBlackBox
from plugin.core.images import as_rgb
from plugin.models.torch_blackbox import Preprocessing, TorchBlackBox
from plugin.models.checkpoint import inspect_checkpoint, load_checkpoint
from plugin.core.errors import CheckpointError, QueryBudgetExceeded, UnsafeCheckpointError

ARCH = "test_resnet"
TINY_CFG = {"input_size": [3, 32, 32], "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
# tf_efficientnet_lite0's own pretrained_cfg (checked against timm below)
LITE0_CFG = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
             "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# Measured on coffee/chelsea/astronaut/camera: our tensor pipeline and timm's
# PIL pipeline differ by at most one grey level (1/255) per pixel and by
# <= 5e-5 on average in normalised units. A wrong interpolation (bilinear for
# bicubic) already gives a mean of ~0.007-0.03 and a max of 12+ grey levels, so
# a looser tolerance such as 0.02 could not tell the two apart.
MEAN_TOL = 1e-3
MAX_GREY_LEVELS = 2


def _state_dict(num_classes=3, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(ARCH, pretrained=False, num_classes=num_classes).state_dict()


def _write_folder(folder, state_dict=None, *, num_classes=3, architecture=ARCH, weights="safetensors",
                  pretrained_cfg=None, **extra_cfg):
    folder.mkdir(parents=True, exist_ok=True)
    sd = _state_dict(num_classes) if state_dict is None else state_dict
    if weights == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    elif weights == "bin":
        torch.save(sd, folder / "pytorch_model.bin")
    cfg = {"architecture": architecture, "num_classes": num_classes,
           "pretrained_cfg": TINY_CFG if pretrained_cfg is None else pretrained_cfg, **extra_cfg}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture()
def tiny(tmp_path):
    return _write_folder(tmp_path / "tiny")


def _images():
    rng = np.random.default_rng(0)
    rgba = np.dstack([skimage.data.chelsea()[:100, :150], np.full((100, 150), 255, np.uint8)])
    return [skimage.data.coffee(), skimage.data.chelsea(), rng.integers(0, 256, (28, 28), dtype=np.uint8),
            rgba, rng.integers(0, 256, (40, 20, 1), dtype=np.uint8), skimage.data.astronaut()]


# -- preprocessing -------------------------------------------------------------
def test_lite0_cfg_is_timms():
    pc = timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    for k, v in LITE0_CFG.items():
        assert list(pc[k]) == v if isinstance(v, list) else pc[k] == v, k


def _timm_reference(pcfg, img):
    data_cfg = timm.data.resolve_data_config(pretrained_cfg=dict(pcfg))
    ref = timm.data.create_transform(**data_cfg)(Image.fromarray(img).convert("RGB")).unsqueeze(0)
    return ref, 1 / 255 / min(data_cfg["std"])  # one grey level in normalised units


PREPROCESSING_CASES = {
    "lite0-bicubic-224": LITE0_CFG,
    "bilinear-32": TINY_CFG,
    "bilinear-0.9-imagenet": {**LITE0_CFG, "interpolation": "bilinear", "crop_pct": 0.9, "mean": IMAGENET_MEAN,
                              "std": IMAGENET_STD},
    "squash": {**LITE0_CFG, "crop_mode": "squash"},
    "non-square": {**TINY_CFG, "input_size": [3, 48, 64], "crop_pct": 0.95},
}


@pytest.mark.parametrize("pcfg", list(PREPROCESSING_CASES.values()), ids=list(PREPROCESSING_CASES))
@pytest.mark.parametrize("photo", ["coffee", "chelsea", "camera"])  # camera is greyscale
def test_preprocessing_matches_timm(pcfg, photo):
    img = getattr(skimage.data, photo)()
    ref, grey_level = _timm_reference(pcfg, img)
    ours = Preprocessing.from_pretrained_cfg(pcfg)([img])
    assert ours.shape == ref.shape == (1, *pcfg["input_size"])
    assert ours.dtype == torch.float32
    diff = (ours - ref).abs()
    assert diff.mean().item() < MEAN_TOL
    assert diff.max().item() <= MAX_GREY_LEVELS * grey_level + 1e-6


@pytest.mark.parametrize("change", [{"interpolation": "bilinear"}, {"crop_pct": 0.855},
                                    {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}])
def test_preprocessing_tolerance_catches_a_wrong_config(change):
    """The tolerance above is tight enough to notice a slightly wrong transform."""
    img = skimage.data.coffee()
    ref, grey_level = _timm_reference(LITE0_CFG, img)
    wrong = Preprocessing.from_pretrained_cfg({**LITE0_CFG, **change})([img])
    diff = (wrong - ref).abs()
    assert diff.mean().item() > MEAN_TOL and diff.max().item() > MAX_GREY_LEVELS * grey_level


def test_preprocessing_batches_mixed_sizes():
    images = _images()
    pre = Preprocessing.from_pretrained_cfg(TINY_CFG)
    batch = pre(images)
    assert batch.shape == (len(images), 3, 32, 32)
    for i, img in enumerate(images):
        assert torch.equal(batch[i : i + 1], pre([img]))


def test_preprocessing_fields():
    pre = Preprocessing.from_pretrained_cfg(LITE0_CFG)
    assert pre.input_size == (3, 224, 224) and pre.interpolation == "bicubic"
    assert pre.crop_pct == 0.875 and pre.crop_mode == "center" and pre.mean == (0.5, 0.5, 0.5)


def test_missing_pretrained_cfg_falls_back_to_the_architecture(tmp_path):
    folder = _write_folder(tmp_path / "nocfg", pretrained_cfg={})
    bb = TorchBlackBox.from_folder(folder, device="cpu")
    arch_cfg = timm.create_model(ARCH, pretrained=False).pretrained_cfg
    assert bb.preprocessing.input_size == tuple(arch_cfg["input_size"])
    assert bb.preprocessing.crop_pct == arch_cfg["crop_pct"]
    assert bb.preprocessing.input_size != tuple(TINY_CFG["input_size"])


def test_preprocessing_rejects_unsupported_crop_mode():
    with pytest.raises(CheckpointError, match="crop_mode"):
        Preprocessing.from_pretrained_cfg({**LITE0_CFG, "crop_mode": "border"})


def test_as_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = as_rgb(gray)
    assert out.shape == (3, 4, 3) and (out[:, :, 2] == gray).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255
    assert as_rgb(rgba).shape == (2, 2, 3) and as_rgb(rgba).max() == 0
    with pytest.raises(ValueError, match="uint8"):
        as_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_rgb(np.zeros((4, 4, 2), np.uint8))


# -- the black box -------------------------------------------------------------
def test_labels_are_hard_and_match_the_model(tiny):
    bb = TorchBlackBox.from_folder(tiny, device="cpu", batch_size=4)
    assert isinstance(bb, BlackBox)
    assert bb.num_classes == 3
    images = _images()
    labels = bb.predict(images)
    assert isinstance(labels, np.ndarray)
    assert labels.shape == (len(images),) and labels.dtype.kind == "i"
    assert ((labels >= 0) & (labels < 3)).all()
    # the labels are the argmax of the checkpoint's own weights on timm's input
    from safetensors.torch import load_file

    ref_model = timm.create_model(ARCH, pretrained=False, num_classes=3)
    ref_model.load_state_dict(load_file(str(tiny / "model.safetensors")))
    with torch.inference_mode():
        ref = ref_model.eval()(Preprocessing.from_pretrained_cfg(TINY_CFG)(images)).argmax(1).numpy()
    assert (labels == ref).all()
    # nothing public hands out scores
    public = [n for n in dir(bb) if not n.startswith("_")]
    assert not any(w in n for n in public for w in ("logit", "prob", "score", "forward"))


def test_batch_size_does_not_change_labels(tiny):
    images = _images()
    a = TorchBlackBox.from_folder(tiny, device="cpu", batch_size=1).predict(images)
    b = TorchBlackBox.from_folder(tiny, device="cpu", batch_size=64).predict(images)
    assert (a == b).all()


def test_queries_are_counted_across_calls(tiny):
    bb = TorchBlackBox.from_folder(tiny, device="cpu")
    images = _images()
    assert bb.num_queries == 0
    bb.predict(images[:2])
    assert bb.num_queries == 2
    bb.predict(images)
    assert bb.num_queries == 2 + len(images)
    empty = bb.predict([])
    assert empty.shape == (0,) and empty.dtype.kind == "i"
    assert bb.num_queries == 2 + len(images)


def test_budget_is_checked_before_any_work(tiny):
    bb = TorchBlackBox.from_folder(tiny, device="cpu", budget=5)
    images = _images()
    bb.predict(images[:3])
    assert bb.num_queries == 3
    with pytest.raises(QueryBudgetExceeded, match="5"):
        bb.predict(images[:3])
    assert bb.num_queries == 3
    # images that would fail preprocessing: the budget refuses them first
    bad = [np.zeros((8, 8, 3), np.float32)] * 3
    with pytest.raises(QueryBudgetExceeded):
        bb.predict(bad)
    with pytest.raises(ValueError, match="uint8"):  # within budget, the same batch does reach the model
        bb.predict(bad[:2])
    assert bb.predict(images[:2]).shape == (2,)  # exactly at the budget is fine
    assert bb.num_queries == 5
    with pytest.raises(QueryBudgetExceeded):
        bb.predict(images[:1])
    assert bb.num_queries == 5


def test_counting_black_box_subclass():
    class Constant(CountingBlackBox):
        def __init__(self, budget=None):
            super().__init__(num_classes=2, budget=budget)
            self.calls = 0

        def _predict(self, images):
            self.calls += 1
            return [1.0] * len(images)

    box = Constant(budget=4)
    out = box.predict([np.zeros((2, 2), np.uint8)] * 3)
    assert out.dtype == np.int64 and out.tolist() == [1, 1, 1]
    with pytest.raises(QueryBudgetExceeded):
        box.predict([np.zeros((2, 2), np.uint8)] * 2)
    assert box.calls == 1 and box.num_queries == 3
    box.predict([])
    assert box.calls == 1  # an empty batch costs nothing and does no work


# -- checkpoints ----------------------------------------------------------------
def test_inspect_records_hashes(tiny):
    info = inspect_checkpoint(tiny)
    assert info.architecture == ARCH and info.num_classes == 3 and info.label_names is None
    assert info.weights_file == "model.safetensors"
    for name in ("config.json", "model.safetensors"):
        assert info.sha256[name] == hashlib.sha256((tiny / name).read_bytes()).hexdigest()
    assert info.pretrained_cfg["input_size"] == [3, 32, 32]


def test_label_names(tmp_path):
    folder = _write_folder(tmp_path / "named", label_names=["a", "b", "c"])
    assert inspect_checkpoint(folder).label_names == ("a", "b", "c")
    folder = _write_folder(tmp_path / "hf", id2label={"0": "x", "1": "y", "2": "z"})
    assert inspect_checkpoint(folder).label_names == ("x", "y", "z")
    folder = _write_folder(tmp_path / "short", label_names=["a", "b"])
    with pytest.raises(CheckpointError, match="label_names"):
        inspect_checkpoint(folder)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_pickle_checkpoint_loads_with_weights_only(tmp_path, tiny, wrap):
    sd = _state_dict()
    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save(sd if wrap is None else {wrap: sd, "epoch": 3}, folder / "pytorch_model.bin")
    _write_folder(folder, sd, weights=None)
    model, info = load_checkpoint(folder)
    assert info.weights_file == "pytorch_model.bin"
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    images = _images()
    bin_labels = TorchBlackBox.from_folder(folder, device="cpu").predict(images)
    st_labels = TorchBlackBox.from_folder(tiny, device="cpu").predict(images)
    assert (bin_labels == st_labels).all()


class _Payload:
    """Pickles to a call of ``os.system`` that would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload(_Payload):
    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class _OddGlobal:
    """A global picklescan only calls suspicious; torch's weights_only refuses it."""

    def __reduce__(self):
        return (datetime.timedelta, (1,))


@pytest.mark.parametrize("payload, fmt", [("system", "torch"), ("system", "raw"), ("exec", "torch")])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, fmt):
    marker = tmp_path / "MARKER"
    folder = _write_folder(tmp_path / "evil", weights=None)
    obj = (_Payload if payload == "system" else _ExecPayload)(marker)
    content = {**_state_dict(), "payload": obj}
    if fmt == "torch":
        torch.save(content, folder / "pytorch_model.bin")
    else:
        with open(folder / "pytorch_model.bin", "wb") as fh:
            pickle.dump(content, fh)
    # the file really is dangerous: a plain unpickle would run the payload (not done here)
    assert b"system" in (folder / "pytorch_model.bin").read_bytes() or payload == "exec"
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(folder)
    with pytest.raises(UnsafeCheckpointError):
        TorchBlackBox.from_folder(folder)
    assert not marker.exists()


def test_refusal_names_the_dangerous_global(tmp_path):
    folder = _write_folder(tmp_path / "evil", weights=None)
    torch.save({**_state_dict(), "payload": _Payload(tmp_path / "MARKER")}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|nt)\.system"):
        load_checkpoint(folder)


def test_weights_only_refuses_what_the_scanner_lets_through(tmp_path):
    folder = _write_folder(tmp_path / "odd", weights=None)
    torch.save({**_state_dict(), "extra": _OddGlobal()}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        load_checkpoint(folder)


def test_pickle_of_non_tensors_is_an_error(tmp_path):
    folder = _write_folder(tmp_path / "odd", weights=None)
    torch.save({**_state_dict(), "note": "hello"}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="state dict"):
        load_checkpoint(folder)


def test_truncated_safetensors(tiny):
    path = tiny / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tiny)
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError):
        load_checkpoint(tiny)


def test_truncated_pickle(tmp_path):
    folder = _write_folder(tmp_path / "bin", weights="bin")
    path = folder / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)


def test_missing_files(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    (tiny / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(tiny)
    folder = _write_folder(tmp_path / "noweights", weights=None)
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(folder)


@pytest.mark.parametrize("config, match", [
    ("{not json", "JSON"),
    (json.dumps({"num_classes": 3}), "architecture"),
    (json.dumps({"architecture": ARCH}), "num_classes"),
    (json.dumps({"architecture": ARCH, "num_classes": -1}), "num_classes"),
    (json.dumps({"architecture": ARCH, "num_classes": "3"}), "num_classes"),
    (json.dumps([ARCH, 3]), "architecture"),
])
def test_bad_config(tiny, config, match):
    (tiny / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tiny)


def test_num_classes_zero_is_an_encoder(tmp_path):
    folder = _write_folder(tmp_path / "enc", _state_dict(num_classes=0), num_classes=0)
    assert inspect_checkpoint(folder).num_classes == 0
    with pytest.raises(CheckpointError, match="num_classes is 0"):
        load_checkpoint(folder)


@pytest.mark.parametrize("architecture, num_classes", [
    (ARCH, 5),  # the head has 3 outputs
    ("resnet18", 3),  # a different network
    ("test_efficientnet", 3),
])
def test_weights_that_do_not_fit(tiny, architecture, num_classes):
    cfg = json.loads((tiny / "config.json").read_text())
    cfg.update(architecture=architecture, num_classes=num_classes)
    (tiny / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tiny)


def test_unknown_architecture(tiny):
    cfg = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**cfg, "architecture": "no_such_net_xyz"}))
    with pytest.raises(CheckpointError, match="unknown timm architecture"):
        load_checkpoint(tiny)


def test_bad_model_args(tmp_path):
    folder = _write_folder(tmp_path / "args", model_args={"no_such_kwarg": 1})
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)


@pytest.mark.slow
def test_real_efficientnet_labels_coffee_as_espresso(demo_models):
    from plugin.demo.models import IMAGENET_MODEL, model_dir

    root, _ = demo_models
    bb = TorchBlackBox.from_folder(model_dir(IMAGENET_MODEL, root), device="cpu")
    assert bb.num_classes == 1000
    assert bb.preprocessing == Preprocessing.from_pretrained_cfg(LITE0_CFG)
    labels = bb.predict([skimage.data.coffee(), skimage.data.chelsea()])
    assert labels[0] == 967  # espresso
    info = timm.data.ImageNetInfo()
    assert info.index_to_label_name(int(labels[0])) == "n07920052"
    assert "cat" in info.index_to_description(int(labels[1]))  # tabby, tiger or Egyptian cat
    assert bb.num_queries == 2
