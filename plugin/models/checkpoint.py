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
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.models.hub_layout import (CONFIG, PICKLE_WEIGHTS, SAFETENSORS, label_names_of, read_config,
                                      safe_model_args)
from plugin.models.limits import safe_json_loads
from plugin.models.pickle_guard import check_checkpoint_pickles

MAX_SAFETENSORS_HEADER = 100 * 2**20  # what the safetensors library itself accepts



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
        model_args=safe_model_args(cfg, str(folder / CONFIG)),
        weights_file=weights,
        sha256={n: sha256_file(folder / n) for n in (CONFIG, weights)},
    )


def check_safetensors_header(path: Path) -> None:
    """Reads a safetensors header without loading tensors: sizes and offsets must fit the file.

    Raises:
        CheckpointError: truncated, malformed, or offsets beyond the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise CheckpointError(f"{path.name}: safetensors header of {n} bytes does not fit a {size}-byte file")
        raw = fh.read(n)
    try:
        header = safe_json_loads(raw.decode("utf-8"), f"{path.name} header")
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path.name}: malformed safetensors header ({str(e)[:200]})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: safetensors header is not an object")
    data = size - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        offs = t.get("data_offsets") if isinstance(t, dict) else None
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data):
            raise CheckpointError(f"{path.name}: tensor {str(name)[:80]!r} lies outside the file's "
                                  f"{data} data bytes (truncated or forged)")


def preflight(folder: str | Path) -> CheckpointInfo:
    """Every check that needs no torch: config and its limits, weights header or pickle allowlist.

    Raises:
        UnsafeCheckpointError: a pickle outside the allowlist, or unsafe ``model_args``.
        ResourceLimitError: a config or archive over a limit.
        CheckpointError: anything malformed.
    """
    info = inspect_checkpoint(folder)
    path = Path(folder) / info.weights_file
    if info.weights_file == SAFETENSORS:
        check_safetensors_header(path)
    else:
        check_checkpoint_pickles(path)
    return info


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
    check_checkpoint_pickles(path)  # the allowlist: only what a state dict needs
    scan_pickle(path)  # the denylist, kept as a second opinion
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
        args = safe_model_args({"model_args": info.model_args}, info.path)  # never a path or URL to timm
        model = timm.create_model(info.architecture, pretrained=False, num_classes=info.num_classes, **args)
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
