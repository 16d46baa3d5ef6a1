"""A repo's ``preprocessor_config.json`` (transformers image processors) read as our :class:`Preprocessing`.

Expressed as timm-style eval preprocessing, a transformers or ONNX model gets
the same batched device pipeline (:class:`~plugin.core.blackbox.InputSpec`)
as a timm model. The forms covered (transformers' own rules):

* ``size: {height, width}`` (ViT, BEiT, DeiT, Swin, EfficientNet): a squash
  resize, then an optional ``crop_size`` centre crop;
* ``size: {shortest_edge}`` with ``crop_pct`` (ConvNeXt, ResNet, PoolFormer):
  below 384 px the shorter side goes to ``shortest_edge / crop_pct`` and the
  centre crop to ``shortest_edge``; from 384 px a squash resize;
* ``size: {shortest_edge}`` with ``crop_size`` (CLIP, BiT, MobileNet,
  MobileViT): shorter side, then crop; LeViT's shorter side is
  ``shortest_edge * 256 / 224``;
* the older ``feature_extractor_type`` files, where ``size``/``crop_size`` are ints;
* ``resample`` (PIL codes), ``do_rescale``/``rescale_factor``/``rescale_offset``,
  ``do_normalize``/``image_mean``/``image_std`` and EfficientNet's
  ``include_top`` (all affine: folded into mean and std over [0, 1]);
* ``do_flip_channel_order`` (MobileViT: the model sees BGR).

A key the config leaves out takes the installed transformers class's default
(ConvNeXt's ImageNet mean, MobileViT's "no normalisation"), as
``AutoImageProcessor`` would. The centre crop starts at the floor of half the
leftover, as transformers crops (torchvision and timm round it). Anything else
(a variable output size, a resample we cannot reproduce, a ``do_*`` step we do
not know) is refused with a clear error instead of being guessed.
"""
from __future__ import annotations

import re
from pathlib import Path

from plugin.core.errors import CheckpointError, UnsupportedCheckpointError
from plugin.models.hub_layout import parse_config_text
from plugin.models.limits import MAX_CONFIG_BYTES, MAX_INPUT_SIDE, ResourceLimitError

# PIL's codes (1 lanczos, 4 box, 5 hamming are refused); transformers resizes PIL's NEAREST as torch's nearest-exact.
PIL_RESAMPLE = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
# The keys whose class default matters when a config leaves them out.
_DEFAULTED = ("size", "crop_size", "crop_pct", "resample", "do_resize", "do_center_crop", "do_rescale",
              "rescale_factor", "rescale_offset", "do_normalize", "image_mean", "image_std", "include_top",
              "do_flip_channel_order", "default_to_square")
# The image processors whose every setting here is reproduced to the pixel (tests/test_formats.py sweeps every
# processor an image-classification model type of the installed transformers uses). Another one (PP-LCNet's own
# short-side rounding and BGR, SigLIP2's variable patches, Perceiver's crop before resize) is refused, not guessed.
REPRODUCED = frozenset({
    "BeitImageProcessor", "BitImageProcessor", "CLIPImageProcessor", "ConvNextImageProcessor", "DeiTImageProcessor",
    "EfficientNetImageProcessor", "Gemma3ImageProcessor", "LevitImageProcessor", "MobileNetV1ImageProcessor",
    "MobileNetV2ImageProcessor", "MobileViTImageProcessor", "PoolFormerImageProcessor", "PvtImageProcessor",
    "SegformerImageProcessor", "SiglipImageProcessor", "ViTImageProcessor",
})
# ``do_*`` steps that leave a classifier's pixels alone (labels, RGB conversion, batching) or that we reproduce.
_KNOWN_STEPS = {"do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_flip_channel_order",
                "do_convert_rgb", "do_reduce_labels"}


def _side(v, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise CheckpointError(f"preprocessor_config.json: {what} must be a positive integer, got {str(v)[:40]}")
    if v > MAX_INPUT_SIDE:
        raise ResourceLimitError(f"preprocessor_config.json: {what} {v} is over the limit of {MAX_INPUT_SIDE}",
                                 "max_input_side", MAX_INPUT_SIDE)
    return v


def _hw(v, what: str, square_default: bool) -> tuple[str, tuple[int, int] | int]:
    """``("square", (h, w))`` or ``("shortest", s)`` from a size field in any of its forms."""
    if isinstance(v, dict):
        if "height" in v and "width" in v:
            return "square", (_side(v["height"], f"{what}.height"), _side(v["width"], f"{what}.width"))
        if "shortest_edge" in v and v.get("longest_edge") is None:
            return "shortest", _side(v["shortest_edge"], f"{what}.shortest_edge")
        raise UnsupportedCheckpointError(f"preprocessor_config.json: {what} {str(v)[:80]} gives no fixed input size")
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return "square", (_side(v[0], what), _side(v[1], what))
    side = _side(v, what)
    return ("square", (side, side)) if square_default else ("shortest", side)


def _triple(v, what: str) -> tuple[float, float, float]:
    vals = v if isinstance(v, (list, tuple)) else [v, v, v]
    if len(vals) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
        raise CheckpointError(f"preprocessor_config.json: {what} must be 3 numbers, got {str(v)[:60]}")
    return tuple(float(x) for x in vals)  # type: ignore[return-value]


def processor_name(kind: str) -> str:
    """``ViTFeatureExtractor``, ``ConvNextImageProcessorFast``... as the class name transformers 5 uses."""
    return re.sub(r"(Fast|Pil)$", "", re.sub(r"FeatureExtractor$", "ImageProcessor", kind))


def _class_defaults(kind: str) -> dict:
    """The installed transformers class's defaults for ``kind``: what ``AutoImageProcessor`` fills in.

    Only a name of the form ``<Model>ImageProcessor`` (or its older ``FeatureExtractor``,
    ``Fast`` and ``Pil`` spellings) that names a transformers image processor class is
    looked up; its class attributes are read, never its code run. Unknown: ``{}``.
    """
    name = processor_name(kind)
    if not re.fullmatch(r"[A-Za-z0-9]{1,80}ImageProcessor", name):
        return {}
    try:
        import transformers
        from transformers.image_processing_utils import BaseImageProcessor

        cls = getattr(transformers, name, None)
    except Exception:  # noqa: BLE001 - a processor module that fails to import is an unknown one
        return {}
    if not (isinstance(cls, type) and issubclass(cls, BaseImageProcessor)):
        return {}
    out = {k: getattr(cls, k) for k in _DEFAULTED if getattr(cls, k, None) is not None}
    # A switch the class leaves at None is off (MobileViT's do_normalize), as transformers reads it.
    out.update({k: False for k in _DEFAULTED if k.startswith("do_") and hasattr(cls, k) and getattr(cls, k) is None})
    if "resample" in out:
        out["resample"] = int(out["resample"])  # a PIL enum
    return out


def _on(cfg: dict, key: str, default: bool) -> bool:
    """A ``do_*`` switch: its value when set (``null`` is off, as in transformers), else ``default``."""
    return bool(cfg[key]) if key in cfg else default


def processor_preprocessing(cfg: dict):
    """A :class:`~plugin.models.torch_blackbox.Preprocessing` equal to the repo's own image processor.

    Raises:
        CheckpointError: a form we cannot reproduce exactly.
    """
    from plugin.models.torch_blackbox import Preprocessing

    kind = str(cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or "")
    if kind and processor_name(kind) not in REPRODUCED:
        raise UnsupportedCheckpointError(
            f"preprocessor_config.json: image processor {kind[:60]!r} is not one we reproduce (its own resize or "
            f"pixel steps); supported: ViT, DeiT, BEiT, ConvNeXt, BiT, CLIP, SigLIP, EfficientNet, LeViT, MobileNet, "
            f"MobileViT, PoolFormer, PVT, SegFormer")
    defaults = _class_defaults(kind)
    cfg = {**defaults, **cfg}
    unknown = sorted(k for k, v in cfg.items() if k.startswith("do_") and v and k not in _KNOWN_STEPS)
    if unknown:
        raise UnsupportedCheckpointError(f"preprocessor_config.json: {unknown[0][:40]} is a step we do not reproduce")
    resample = cfg.get("resample", 2)
    if resample not in PIL_RESAMPLE:
        raise UnsupportedCheckpointError(f"preprocessor_config.json: resample {str(resample)[:20]} is not one we "
                                         f"reproduce (0 nearest, 2 bilinear, 3 bicubic)")
    if not _on(cfg, "do_resize", True):
        raise UnsupportedCheckpointError("preprocessor_config.json: do_resize is false; the input size is not fixed")
    # Whether an int size is a square or the shorter side: the class says (ConvNeXt, CLIP: shorter side);
    # with no class, crop_pct only goes with a shorter side.
    square_default = cfg.get("default_to_square")
    if not isinstance(square_default, bool):
        square_default = defaults.get("default_to_square", "crop_pct" not in cfg)
    form, size = _hw(cfg.get("size", 224), "size", square_default)
    crop = None
    if _on(cfg, "do_center_crop", "crop_size" in cfg and form == "shortest") and cfg.get("crop_size") is not None:
        _, crop = _hw(cfg["crop_size"], "crop_size", True)
    pct_set = isinstance(cfg.get("crop_pct"), (int, float)) and not isinstance(cfg.get("crop_pct"), bool)
    if form == "square":
        h, w = size  # type: ignore[misc]
        if crop is None:
            input_hw, crop_pct, mode = (h, w), 1.0, "squash"
        else:
            ch, cw = crop
            if ch * w != cw * h or ch > h:
                raise UnsupportedCheckpointError(f"preprocessor_config.json: crop {ch}x{cw} is not a centre crop "
                                                 f"in the ratio of size {h}x{w}")
            # +0.5: floor(crop / crop_pct) lands on the resize size despite float rounding.
            input_hw, crop_pct, mode = (ch, cw), ch / (h + 0.5), "squash"
    elif pct_set and (crop is None or crop == (size, size)):
        s, pct = int(size), float(cfg["crop_pct"])  # type: ignore[arg-type]
        if not 0 < pct <= 1:
            raise CheckpointError(f"preprocessor_config.json: crop_pct {pct} is not in (0, 1]")
        if s < 384:  # ConvNeXt's rule: shorter side to s / crop_pct, then a centre crop of s
            input_hw, crop_pct, mode = (s, s), s / (int(s / pct) + 0.5), "center"
        else:
            input_hw, crop_pct, mode = (s, s), 1.0, "squash"
    elif crop is not None and not pct_set:
        s = int(size)  # type: ignore[arg-type]
        if kind.startswith("Levit"):  # LeViT resizes the shorter side to 256/224 of shortest_edge
            s = int((256 / 224) * s)
        ch, cw = crop
        if ch != cw or ch > s:
            raise UnsupportedCheckpointError(f"preprocessor_config.json: crop {ch}x{cw} after a shorter side of {s} "
                                             f"is not a square centre crop we reproduce")
        input_hw, crop_pct, mode = (ch, cw), ch / (s + 0.5), "center"
    elif crop is not None:
        raise UnsupportedCheckpointError(f"preprocessor_config.json: crop_pct with a crop {crop} other than the "
                                         f"size {size} is not a form we reproduce")
    else:
        raise UnsupportedCheckpointError("preprocessor_config.json: a shortest_edge resize with no crop gives no "
                                         "fixed input size")
    # Every step after the crop is affine per channel: x * factor - offset, less mean, over std
    # (EfficientNet's include_top divides by std once more), folded into one mean and std.
    factor = float(cfg.get("rescale_factor", 1 / 255)) if _on(cfg, "do_rescale", True) else 1.0
    offset = 1.0 if _on(cfg, "do_rescale", True) and _on(cfg, "rescale_offset", False) else 0.0
    if _on(cfg, "do_normalize", True):
        mean, std = _triple(cfg.get("image_mean", 0.5), "image_mean"), _triple(cfg.get("image_std", 0.5), "image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if kind.startswith("EfficientNet") and _on(cfg, "include_top", False):
        top = _triple(cfg.get("image_std", 0.5), "image_std")
        std = tuple(a * b for a, b in zip(std, top))
    if any(s == 0 for s in std) or factor <= 0:
        raise CheckpointError("preprocessor_config.json: image_std and rescale_factor must be non-zero")
    scale = factor * 255.0  # our pipeline divides by 255: fold the repo's rescale into mean and std
    return Preprocessing(input_size=(3, *input_hw), interpolation=PIL_RESAMPLE[resample], crop_pct=crop_pct,
                         crop_mode=mode, mean=tuple((m + offset) / scale for m in mean),
                         std=tuple(s / scale for s in std), crop_offset="floor",
                         bgr=_on(cfg, "do_flip_channel_order", False))


def read_processor_config(path) -> dict:
    """Parses ``preprocessor_config.json`` within the config limits."""
    p = Path(path)
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ResourceLimitError(f"{p}: over the {MAX_CONFIG_BYTES}-byte limit for a config", "max_config_bytes",
                                 MAX_CONFIG_BYTES)
    return parse_config_text(p.read_text(encoding="utf-8", errors="replace"), str(p))
