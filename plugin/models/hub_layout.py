"""The timm hub layout, in one place: file names, ``config.json`` rules, writing a folder.

A repo or folder holds ``config.json`` (``architecture``, ``num_classes``,
optional ``label_names`` / transformers ``id2label``, ``pretrained_cfg``,
``model_args``), one weights file and maybe a ``README.md``. Every module that
parses a config, names a model's classes or decides "classifier or encoder"
calls this one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from plugin.core.errors import CheckpointError, UnsafeCheckpointError
from plugin.models.limits import (MAX_CONFIG_BYTES, MAX_IN_CHANS, MAX_INPUT_SIDE, MAX_NUM_CLASSES, ResourceLimitError,
                                  safe_json_loads)

SAFETENSORS = "model.safetensors"
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pth", "model.pt")
WEIGHTS_PREFERENCE = (SAFETENSORS, *PICKLE_WEIGHTS)  # safetensors first: it cannot run code
CONFIG = "config.json"
README = "README.md"
_PLACEHOLDER = re.compile(r"LABEL_\d+")
# model_args a config may pass to timm.create_model: shape knobs checked below, nothing that names
# a file, a URL or another config (checkpoint_path, pretrained_cfg_overlay...).
SAFE_MODEL_ARGS = ("in_chans", "global_pool", "drop_rate", "drop_path_rate", "img_size")
_POOLS = ("", "avg", "max", "avgmax", "catavgmax", "fast", "token", "map", "avg_token")


def parse_config_text(text: str, where: str = CONFIG) -> dict:
    """Parses ``config.json`` text into a dict, within :mod:`plugin.models.limits`.

    Raises:
        CheckpointError: not JSON, or not a JSON object.
        ResourceLimitError: too large, too deep, or a huge integer or string.
    """
    try:
        cfg = safe_json_loads(text, where)
    except ResourceLimitError:
        raise
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        raise CheckpointError(f"{where}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where}: expected a JSON object with 'architecture' and 'num_classes', "
                              f"got a JSON {type(cfg).__name__}")
    return cfg


def read_config(folder: str | Path) -> dict:
    """Reads and validates a folder's ``config.json`` for loading.

    Raises:
        CheckpointError: the file is missing, not JSON, or lacks required keys.
    """
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG}; expected a timm hub-layout folder")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ResourceLimitError(f"{path}: {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit for a config",
                                 "max_config_bytes", MAX_CONFIG_BYTES)
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from e
    return validate_config(parse_config_text(text, str(path)), str(path))


def validate_config(cfg: dict, where: str = CONFIG) -> dict:
    """Checks the keys a load needs; fills ``num_classes`` from ``id2label``."""
    if not isinstance(cfg.get("architecture"), str):
        raise CheckpointError(f"{where}: missing 'architecture'")
    if "num_classes" not in cfg and isinstance(cfg.get("id2label"), dict):
        cfg = {**cfg, "num_classes": len(cfg["id2label"])}
    n = cfg.get("num_classes")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise CheckpointError(f"{where}: 'num_classes' must be a non-negative integer")
    if n > MAX_NUM_CLASSES:
        raise ResourceLimitError(f"{where}: num_classes {n} is over the limit of {MAX_NUM_CLASSES}",
                                 "max_num_classes", MAX_NUM_CLASSES)
    pcfg = cfg.get("pretrained_cfg")
    if pcfg is not None and not isinstance(pcfg, dict):
        raise CheckpointError(f"{where}: 'pretrained_cfg' must be an object")
    for key in ("input_size", "test_input_size"):
        if isinstance(pcfg, dict) and pcfg.get(key) is not None:
            _check_input_size(pcfg[key], f"{where}: pretrained_cfg.{key}")
    safe_model_args(cfg, where)
    return cfg


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_side(v, what: str) -> None:
    if not _is_int(v) or v <= 0:
        raise CheckpointError(f"{what}: image sides must be positive integers, got {v!r}")
    if v > MAX_INPUT_SIDE:
        raise ResourceLimitError(f"{what}: {v} pixels is over the limit of {MAX_INPUT_SIDE}",
                                 "max_input_side", MAX_INPUT_SIDE)


def _check_input_size(v, what: str) -> None:
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise CheckpointError(f"{what}: expected [channels, height, width], got {str(v)[:80]}")
    if not _is_int(v[0]) or not 0 < v[0] <= MAX_IN_CHANS:
        raise CheckpointError(f"{what}: {v[0]!r} channels (expected 1..{MAX_IN_CHANS})")
    _check_side(v[1], what)
    _check_side(v[2], what)


def safe_model_args(cfg: dict, where: str = CONFIG) -> dict:
    """The config's ``model_args``, checked against :data:`SAFE_MODEL_ARGS`, for ``timm.create_model``.

    Raises:
        UnsafeCheckpointError: a key outside the allowlist that names a file, a URL
            or another config (``checkpoint_path``, ``pretrained_cfg_overlay``...).
        CheckpointError: any other key outside the allowlist, or a bad value.
        ResourceLimitError: ``img_size`` or ``in_chans`` over the limits.
    """
    args = cfg.get("model_args")
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise CheckpointError(f"{where}: 'model_args' must be an object")
    for k, v in args.items():
        if k not in SAFE_MODEL_ARGS:
            text = json.dumps(v)[:200] if not isinstance(v, str) else v
            risky = ("path" in k or "cfg" in k or "file" in k or "url" in k or "/" in text or ":" in text)
            err = UnsafeCheckpointError if risky else CheckpointError
            raise err(f"{where}: model_args key {k!r} is not allowed (allowed: {', '.join(SAFE_MODEL_ARGS)})")
    if "in_chans" in args and (not _is_int(args["in_chans"]) or not 0 < args["in_chans"] <= MAX_IN_CHANS):
        raise CheckpointError(f"{where}: model_args.in_chans must be 1..{MAX_IN_CHANS}")
    if "global_pool" in args and args["global_pool"] not in _POOLS:
        raise CheckpointError(f"{where}: model_args.global_pool {str(args['global_pool'])[:40]!r} is not one of {_POOLS}")
    for k in ("drop_rate", "drop_path_rate"):
        if k in args and (not isinstance(args[k], (int, float)) or isinstance(args[k], bool) or not 0 <= args[k] <= 1):
            raise CheckpointError(f"{where}: model_args.{k} must be a number in [0, 1]")
    if "img_size" in args:
        size = args["img_size"]
        for side in (size if isinstance(size, (list, tuple)) and len(size) == 2 else [size]):
            _check_side(side, f"{where}: model_args.img_size")
    return dict(args)


def label_names_of(cfg: dict | None) -> tuple[str, ...] | None:
    """Class names from ``label_names`` or a transformers ``id2label``, in index order.

    None when the config names no classes, or only transformers' placeholders
    ``LABEL_0, LABEL_1...`` (written when nobody knew the names).

    Raises:
        CheckpointError: names are given but their count disagrees with ``num_classes``.
    """
    if not isinstance(cfg, dict):
        return None
    names = cfg.get("label_names")
    if names is None and isinstance(cfg.get("id2label"), dict):
        try:
            id2label = {int(k): v for k, v in cfg["id2label"].items()}
            names = [id2label[i] for i in range(len(id2label))]
        except (ValueError, KeyError, TypeError):
            names = None
    if not isinstance(names, (list, tuple)) or not names:
        return None
    if len(names) > MAX_NUM_CLASSES:
        raise CheckpointError(f"label_names has {len(names)} entries, over the limit of {MAX_NUM_CLASSES}")
    names = tuple(str(n) for n in names)
    if all(_PLACEHOLDER.fullmatch(n) for n in names):
        return None
    n = cfg.get("num_classes")
    if isinstance(n, int) and len(names) != n:
        raise CheckpointError(f"label_names has {len(names)} entries but num_classes is {n}")
    return names


def has_label_names(cfg: dict | None) -> bool:
    """True when the config names its classes (see :func:`label_names_of`); never raises."""
    try:
        return label_names_of(cfg) is not None
    except CheckpointError:
        return True  # names are there, just inconsistent: the card is not silent about classes


def is_classifier(cfg: dict | None) -> bool:
    """True when the config declares output classes.

    False for feature encoders (``num_classes: 0``, timm's way of saying "no
    head") and for a missing or unreadable config, whose outputs mean nothing.
    """
    if not isinstance(cfg, dict):
        return False
    n = cfg.get("num_classes")
    if isinstance(n, int) and not isinstance(n, bool):
        return n > 0
    return bool(cfg.get("id2label") or cfg.get("label_names"))


def write_config(folder: str | Path, cfg: dict) -> Path:
    path = Path(folder) / CONFIG
    path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return path


def write_folder(folder: str | Path, cfg: dict, state_dict: dict | None = None, card: str | None = None) -> Path:
    """Writes a hub-layout folder: ``config.json``, ``model.safetensors`` and an optional README."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if state_dict is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(folder / SAFETENSORS))
    write_config(folder, cfg)
    if card is not None:
        (folder / README).write_text(card, encoding="utf-8")
    return folder
