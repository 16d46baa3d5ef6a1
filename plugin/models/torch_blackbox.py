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

from plugin.core.blackbox import CountingBlackBox
from plugin.core.errors import CheckpointError
from plugin.core.images import as_rgb
from plugin.models.checkpoint import load_checkpoint


@dataclass(frozen=True)
class Preprocessing:
    """timm's eval transform, resolved from a ``pretrained_cfg``."""

    input_size: tuple[int, int, int]
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

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
        interp = {"bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST}.get(
            self.interpolation, InterpolationMode.BILINEAR
        )
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
            out.append(F.center_crop(t, [h, w]))
        batch = torch.stack(out).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (batch - mean) / std


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
    """A local torch classifier seen through its argmax only."""

    def __init__(self, model, preprocessing: Preprocessing, num_classes: int, *, device: str | None = None,
                 batch_size: int = 64, budget: int | None = None, info=None):
        super().__init__(num_classes=num_classes, budget=budget)
        self.device = pick_device(device)
        self._model = model.to(self.device).eval()
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.info = info

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> "TorchBlackBox":
        """Loads a timm hub-layout folder (see :mod:`plugin.models.checkpoint`)."""
        model, info = load_checkpoint(folder)
        pre = Preprocessing.from_pretrained_cfg(info.pretrained_cfg, model=model)
        return cls(model, pre, info.num_classes, info=info, **kwargs)

    def _predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        labels = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = self.preprocessing(images[start : start + self.batch_size]).to(self.device)
                labels.append(self._model(x).argmax(dim=1).cpu().numpy())
        return np.concatenate(labels)
