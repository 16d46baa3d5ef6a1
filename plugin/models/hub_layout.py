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

from plugin.core.errors import CheckpointError

SAFETENSORS = "model.safetensors"
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pth", "model.pt")
WEIGHTS_PREFERENCE = (SAFETENSORS, *PICKLE_WEIGHTS)  # safetensors first: it cannot run code
CONFIG = "config.json"
README = "README.md"
_PLACEHOLDER = re.compile(r"LABEL_\d+")


def parse_config_text(text: str, where: str = CONFIG) -> dict:
    """Parses ``config.json`` text into a dict.

    Raises:
        CheckpointError: not JSON, or not a JSON object.
    """
    try:
        cfg = json.loads(text)
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
    return cfg


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
