"""A local torch classifier as a hard-label black box, with timm's preprocessing.

Logits never leave :class:`TorchBlackBox`; the search sees only
:class:`~plugin.core.blackbox.BlackBox`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from plugin.core.blackbox import CountingBlackBox, InputSpec, crop_start
from plugin.core.errors import CheckpointError
from plugin.core.images import as_rgb
from plugin.models.checkpoint import load_checkpoint


@dataclass(frozen=True)
class Preprocessing:
    """Eval preprocessing: timm's transform from a ``pretrained_cfg``, or a transformers image processor's."""

    input_size: tuple[int, int, int]
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_offset: str = "round"  # where a centre crop starts: "round" half the leftover (timm), "floor" (transformers)
    bgr: bool = False  # the model sees BGR (normalised in RGB order, then the channels flipped, as MobileViT)

    @classmethod
    def from_pretrained_cfg(cls, pretrained_cfg: dict, model=None) -> "Preprocessing":
        from timm.data import resolve_data_config

        if not pretrained_cfg and model is None:
            raise CheckpointError("no pretrained_cfg and no model to resolve preprocessing from")
        cfg = resolve_data_config(pretrained_cfg=dict(pretrained_cfg or {}), model=model)
        if cfg.get("crop_mode", "center") not in ("center", "squash"):
            raise CheckpointError(f"unsupported crop_mode {cfg['crop_mode']!r} (center or squash)")
        return cls(
            input_size=tuple(cfg["input_size"]),
            interpolation=cfg.get("interpolation", "bilinear"),
            crop_pct=float(cfg.get("crop_pct") or 1.0),
            crop_mode=cfg.get("crop_mode", "center"),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
        )

    def __call__(self, images: Sequence[np.ndarray]):
        """Turns raw uint8 RGB images of any size into a normalised batch."""
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        _, h, w = self.input_size
        interp = {"bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST,
                  "nearest-exact": InterpolationMode.NEAREST_EXACT}.get(self.interpolation, InterpolationMode.BILINEAR)
        th, tw = math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)
        out = []
        for img in images:
            t = torch.from_numpy(np.require(as_rgb(img), requirements=["C", "W"])).permute(2, 0, 1)
            if self.crop_mode == "squash":
                size: list[int] | int = [th, tw]
            elif th == tw:
                size = th  # shorter side, as timm's Resize(int)
            else:  # timm's ResizeKeepRatio for non-square inputs
                ih, iw = t.shape[-2:]
                ratio = min(ih / th, iw / tw)
                size = [round(ih / ratio), round(iw / ratio)]
            t = F.resize(t, size, interpolation=interp, antialias=True)
            top, left = crop_start(tuple(t.shape[-2:]), (h, w), self.crop_offset).tolist()
            if top >= 0 and left >= 0:
                out.append(t[:, top : top + h, left : left + w])
            else:  # smaller than the crop: torchvision pads it, as transformers does
                out.append(F.center_crop(t, [h, w]))
        batch = torch.stack(out).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        batch = (batch - mean) / std
        return batch.flip(1) if self.bgr else batch


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class TorchBlackBox(CountingBlackBox):
    """A local torch classifier seen through its argmax only.

    It takes both paths of the protocol: raw RGB images (:meth:`predict`, its
    own preprocessing) and, through :attr:`input_spec`, model inputs the search
    builds on the same device (:meth:`predict_tensor`). On CUDA the forward
    runs in bf16 autocast with channels_last memory (``amp=False`` turns both off).
    """

    def __init__(self, model, preprocessing: Preprocessing, num_classes: int, *, device: str | None = None,
                 batch_size: int = 64, budget: int | None = None, info=None, amp: bool = True):
        super().__init__(num_classes=num_classes, budget=budget)
        import torch

        self.device = pick_device(device)
        self._cuda = torch.device(self.device).type == "cuda"
        self.amp = amp and self._cuda
        self._model = model.to(self.device).eval()
        if self.amp:
            self._model = self._model.to(memory_format=torch.channels_last)
        if self._cuda:
            # Every chunk has the model's one input size: let cuDNN pick its fastest kernels once.
            torch.backends.cudnn.benchmark = True
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.info = info

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> "TorchBlackBox":
        """Loads a timm hub-layout folder (see :mod:`plugin.models.checkpoint`)."""
        model, info = load_checkpoint(folder)
        pre = Preprocessing.from_pretrained_cfg(info.pretrained_cfg, model=model)
        return cls(model, pre, info.num_classes, info=info, **kwargs)

    @property
    def input_spec(self) -> InputSpec:
        """The model's eval preprocessing as an :class:`InputSpec` on this device."""
        p = self.preprocessing
        return InputSpec(size=(p.input_size[1], p.input_size[2]), crop_pct=p.crop_pct, crop_mode=p.crop_mode,
                         interpolation=p.interpolation, mean=tuple(p.mean), std=tuple(p.std), device=self.device,
                         dtype="bfloat16" if self.amp else "float32", crop_offset=p.crop_offset, bgr=p.bgr)

    def _forward(self, x) -> np.ndarray:
        return self._labels_on_device(x).cpu().numpy()

    def _labels_on_device(self, x):
        """Argmax labels, left on the device: a chunk syncs with the host once, not per batch."""
        import torch

        if self.amp:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self._model(x).argmax(dim=1)
        return self._model(x.float()).argmax(dim=1)

    def _predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        labels = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = self.preprocessing(images[start : start + self.batch_size]).to(self.device)
                labels.append(self._forward(x))
        return np.concatenate(labels)

    def _predict_tensor(self, batch) -> np.ndarray:
        import torch

        labels = []
        step = self.batch_size * (4 if self._cuda else 1)  # a GPU takes bigger batches than the recipe's CPU default
        with torch.inference_mode():
            for start in range(0, int(batch.shape[0]), step):
                labels.append(self._labels_on_device(batch[start : start + step].to(self.device, non_blocking=True)))
            return torch.cat(labels).cpu().numpy() if labels else np.zeros(0, np.int64)
