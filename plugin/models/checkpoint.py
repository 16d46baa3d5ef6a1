"""Safe loading of timm hub-layout checkpoint folders.

A folder holds ``config.json`` (``architecture``, ``num_classes``, optional
``label_names``, ``pretrained_cfg`` and ``model_args``) and weights in
``model.safetensors`` or ``pytorch_model.bin``. Untrusted weights never run
code: safetensors is preferred, and a pickle is scanned with picklescan and
then read only with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.models.hub_layout import CONFIG, PICKLE_WEIGHTS, SAFETENSORS, label_names_of, read_config



@dataclass(frozen=True)
class CheckpointInfo:
    """Facts about a checkpoint folder, recorded before any weight is read."""

    path: str
    architecture: str
    num_classes: int
    label_names: tuple[str, ...] | None
    pretrained_cfg: dict = field(default_factory=dict, hash=False)
    model_args: dict = field(default_factory=dict, hash=False)
    weights_file: str = ""
    sha256: dict = field(default_factory=dict, hash=False)  # file name -> hex digest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def inspect_checkpoint(folder: str | Path) -> CheckpointInfo:
    """Reads the config, picks the weights file and hashes the files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    cfg = read_config(folder)
    weights = next((n for n in (SAFETENSORS, *PICKLE_WEIGHTS) if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: no weights ({SAFETENSORS} or {', '.join(PICKLE_WEIGHTS)})")
    return CheckpointInfo(
        path=str(folder),
        architecture=cfg["architecture"],
        num_classes=cfg["num_classes"],
        label_names=label_names_of(cfg),
        pretrained_cfg=dict(cfg.get("pretrained_cfg") or {}),
        model_args=dict(cfg.get("model_args") or {}),
        weights_file=weights,
        sha256={n: sha256_file(folder / n) for n in (CONFIG, weights)},
    )


def scan_pickle(path: Path) -> None:
    """Refuses a pickle checkpoint that imports anything dangerous.

    Raises:
        UnsafeCheckpointError: picklescan flags it or cannot parse it.
    """
    from picklescan.scanner import scan_file_path

    try:
        result = scan_file_path(str(path))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from e
    if result.scan_err:
        raise UnsafeCheckpointError(f"{path.name}: picklescan could not parse the file; refusing to load it")
    if result.infected_files or result.issues_count:
        bad = sorted({f"{g.module}.{g.name}" for g in result.globals if getattr(g.safety, "name", "") == "Dangerous"})
        raise UnsafeCheckpointError(f"{path.name}: pickle imports dangerous globals {bad or '(unknown)'}; refused")


def load_state_dict(folder: str | Path, weights_file: str) -> dict[str, Any]:
    """Loads tensors without ever executing checkpoint code."""
    import torch

    path = Path(folder) / weights_file
    if weights_file == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from e
    scan_pickle(path)
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(f"{path.name}: refused by torch.load(weights_only=True): {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return sd


def build_model(info: CheckpointInfo, state_dict: dict):
    """Creates the timm architecture and loads the weights strictly."""
    import timm

    if not timm.is_model(info.architecture):
        raise CheckpointError(f"{info.path}: unknown timm architecture {info.architecture!r}")
    try:
        model = timm.create_model(info.architecture, pretrained=False, num_classes=info.num_classes, **info.model_args)
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{info.path}: weights do not fit {info.architecture}: {str(e)[:500]}") from e
    return model.eval()


def load_checkpoint(folder: str | Path):
    """Returns ``(model, info)`` for a timm hub-layout folder."""
    info = inspect_checkpoint(folder)
    if info.num_classes == 0:
        raise CheckpointError(f"{folder}: num_classes is 0 (a feature encoder, not a classifier)")
    return build_model(info, load_state_dict(folder, info.weights_file)), info
