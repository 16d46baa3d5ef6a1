"""transformers image classifiers (``ViTForImageClassification``, ConvNeXt, ResNet, Swin, BEiT, DeiT...).

Read without ever running repo code or touching the network:

* the config goes through ``AutoConfig`` with ``trust_remote_code=False``;
  ``auto_map``, a ``model_type`` or an ``architectures`` entry transformers
  does not know is refused (:class:`~plugin.models.formats.RemoteCodeError`)
  before any download;
* weights come from ``model.safetensors`` or a sharded safetensors index; a
  ``pytorch_model.bin`` goes through our pickle allowlist, then
  ``torch.load(weights_only=True)``, and is rewritten as safetensors so that
  transformers itself never unpickles;
* ``HF_HUB_OFFLINE=1`` and ``DISABLE_SAFETENSORS_CONVERSION=1`` are set and
  every call is ``local_files_only``;
* preprocessing comes from ``preprocessor_config.json``
  (:mod:`plugin.models.preprocessing`); ``id2label`` names the classes
  (``LABEL_n`` placeholders name none, but still count as classes).
"""
from __future__ import annotations

import re
import tempfile
from functools import lru_cache
from pathlib import Path

from plugin.core.errors import CheckpointError, UnsupportedCheckpointError
from plugin.core.settings import offline
from plugin.models.format_types import PREPROCESSOR, Detected, RemoteCodeError, read_folder_config
from plugin.models.hub_layout import CONFIG, SAFETENSORS, label_names_of
from plugin.models.limits import MAX_NUM_CLASSES, safe_json_loads

INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


@lru_cache(maxsize=1)
def _known() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(model types, image-classification classes, every model class) transformers ships."""
    from transformers.models.auto import configuration_auto, modeling_auto

    def flat(mapping) -> set[str]:
        out: set[str] = set()
        for v in mapping.values():
            out.update(v if isinstance(v, (list, tuple)) else [v])
        return out

    heads = flat(modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)
    every = set(heads)
    for name in dir(modeling_auto):
        if name.startswith("MODEL_") and name.endswith("_MAPPING_NAMES"):
            every |= flat(getattr(modeling_auto, name))
    vision = flat(getattr(modeling_auto, "MODEL_FOR_IMAGE_MAPPING_NAMES", {}))
    return (frozenset(configuration_auto.CONFIG_MAPPING_NAMES), frozenset(heads), frozenset(every),
            frozenset(vision))


def pipeline_of(config: dict) -> str | None:
    """The task the Hub infers from a transformers config: its architectures (or ``auto_map``) say it."""
    archs = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    auto = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    _, heads, _, vision = _known()
    if any(a in heads or "ForImageClassification" in str(a) for a in archs) or "AutoModelForImageClassification" in auto:
        return "image-classification"
    if any(a in vision for a in archs):
        return "image-feature-extraction"
    return None


def weights_files(names: frozenset[str]) -> tuple[str, ...]:
    """The torch weights a load reads: one safetensors file, an index and its shards, or a pickle."""
    if SAFETENSORS in names:
        return (SAFETENSORS,)
    if INDEX in names:
        return (INDEX, *sorted(n for n in names if _SHARD.match(n)))
    if PICKLE in names:
        return (PICKLE,)
    return ()


def refusal(config: dict) -> str:
    """Why this config would need remote code ("" when it needs none)."""
    if "auto_map" in config:
        amap = config["auto_map"]
        what = ", ".join(f"{k} -> {v}" for k, v in amap.items())[:200] if isinstance(amap, dict) else str(amap)[:200]
        return f"config.json asks for remote code (auto_map: {what}); never loaded"
    model_types, _, every, _ = _known()
    mt = config.get("model_type")
    if mt is not None and mt not in model_types:
        return f"model_type {str(mt)[:60]!r} is unknown to transformers (it would need remote code); never loaded"
    archs = config.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        return "config.json 'architectures' is not a list of names; never loaded"
    unknown = [a for a in archs or [] if a not in every]
    if unknown:
        return f"architecture {unknown[0][:80]!r} is unknown to transformers (it would need remote code); never loaded"
    return ""


class TransformersFormat:
    """The transformers layout: ``config.json`` with ``architectures``/``model_type``, torch weights."""

    name = "transformers"

    def detect(self, names: frozenset[str], config: dict | None) -> Detected | None:
        if config is None or not ("architectures" in config or isinstance(config.get("model_type"), str)):
            return None
        why = refusal(config)
        if why:
            return Detected("transformers", refused=True, supported=True, reason=why, library="transformers",
                            pipeline_tag=pipeline_of(config))
        weights = weights_files(names)
        tf = [n for n in names if n.endswith((".h5", ".msgpack"))]
        if not weights and any(n.endswith(".onnx") for n in names):
            return None  # an ONNX export with transformers' config beside it
        if not weights and tf:
            return Detected("transformers-" + ("tf" if any(n.endswith(".h5") for n in tf) else "flax"),
                            supported=False, library="transformers",
                            reason=f"transformers repo with no PyTorch weights (only {', '.join(sorted(tf))})",
                            pipeline_tag=pipeline_of(config))
        if not weights:  # a broken repo: nothing to fetch, failed (failed-corrupt), never "unsupported"
            return Detected("transformers", (), library="transformers", pipeline_tag=pipeline_of(config),
                            reason=f"no weights file ({SAFETENSORS}, {INDEX} or {PICKLE})")
        archs = config.get("architectures") or []
        _, heads, _, _ = _known()
        encoder = bool(archs) and not any(a in heads for a in archs)
        files = (CONFIG, *((PREPROCESSOR,) if PREPROCESSOR in names else ()), *weights)
        return Detected("transformers", files, encoder=encoder, library="transformers", pipeline_tag=pipeline_of(config),
                        reason=f"{archs[0]} has no image-classification head (a feature encoder)" if encoder else "")

    def preflight(self, folder: Path):
        """Config, labels, preprocessing and weights headers (or the pickle allowlist); no model code."""
        return self._checked(folder)[0]

    def _checked(self, folder: Path):
        """:meth:`preflight`'s checkpoint info, and the preprocessing it resolved (``load`` needs both)."""
        from plugin.models.checkpoint import CheckpointInfo, check_safetensors_header, sha256_file
        from plugin.models.pickle_guard import check_checkpoint_pickles

        raw = read_folder_config(folder) or {}
        why = refusal(raw)
        if why:
            raise RemoteCodeError(f"{folder.name}: {why}")
        names = frozenset(p.name for p in folder.iterdir() if p.is_file())
        weights = weights_files(names)
        if not weights:
            raise CheckpointError(f"{folder}: no {SAFETENSORS}, {INDEX} or {PICKLE}")
        if weights[0] == INDEX:
            weights = (INDEX, *self._shards(folder))
        for w in weights:
            if w.endswith(".safetensors"):
                check_safetensors_header(folder / w)
            elif w == PICKLE:
                check_checkpoint_pickles(folder / w)
        id2label = raw.get("id2label")
        # A timm wrapper keeps timm's num_classes and label_names where transformers keeps id2label.
        count = raw.get("num_labels", raw.get("num_classes", 2))
        if isinstance(id2label, dict):
            num_classes = len(id2label)
        elif isinstance(count, int) and not isinstance(count, bool):
            num_classes = count
        else:
            raise CheckpointError(f"{folder}: num_labels {str(count)[:40]!r} is not a number of classes")
        if not 0 < num_classes <= MAX_NUM_CLASSES:
            raise CheckpointError(f"{folder}: {num_classes} classes (expected 1..{MAX_NUM_CLASSES})")
        if raw.get("model_type") == "timm_wrapper":
            check_timm_wrapper(folder, raw)
        pre = model_preprocessing(folder, raw)
        archs = raw.get("architectures") or [f"{raw.get('model_type')}ForImageClassification"]
        files = (CONFIG, *((PREPROCESSOR,) if (folder / PREPROCESSOR).is_file() else ()), *weights)
        return CheckpointInfo(path=str(folder), architecture=str(archs[0]), num_classes=num_classes,
                              label_names=label_names_of({**raw, "num_classes": num_classes}),
                              pretrained_cfg={"input_size": list(pre.input_size)}, weights_file=weights[0],
                              sha256={n: sha256_file(folder / n) for n in files}), pre

    @staticmethod
    def _shards(folder: Path) -> list[str]:
        """The shard files an index names; each must be a plain file name inside the folder."""
        index = safe_json_loads((folder / INDEX).read_text(encoding="utf-8", errors="replace"), INDEX)
        wmap = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wmap, dict) or not wmap:
            raise CheckpointError(f"{folder.name}/{INDEX}: no weight_map")
        shards = sorted(set(map(str, wmap.values())))
        bad = [s for s in shards if not _SHARD.match(s) or not (folder / s).is_file()]
        if bad:
            raise CheckpointError(f"{folder.name}/{INDEX}: shard {bad[0][:80]!r} is missing or not a shard name")
        return shards

    def load(self, folder: Path, **kwargs):
        """The model as a :class:`~plugin.models.torch_blackbox.TorchBlackBox`, its logits never leaving it."""
        from plugin.models.torch_blackbox import TorchBlackBox

        info, pre = self._checked(folder)
        model = _build(folder, info)
        return TorchBlackBox(logits_module(model), pre, info.num_classes, info=info, **kwargs)


def check_timm_wrapper(folder: Path, config: dict) -> None:
    """A Trainer fine-tune of a timm model (``model_type: timm_wrapper``) builds a timm model: check what it asks.

    transformers calls ``timm.create_model(architecture, pretrained=False, **model_args)``. So the
    architecture must be one timm builds locally (never an ``hf-hub:`` name, which timm would
    fetch), and ``model_args`` pass the timm format's allowlist (no ``checkpoint_path``...).

    Raises:
        UnsupportedCheckpointError: an architecture timm does not build locally.
        UnsafeCheckpointError: a ``model_args`` key that names a file, a URL or another config.
    """
    import timm

    from plugin.models.hub_layout import safe_model_args

    arch = config.get("architecture")
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise UnsupportedCheckpointError(f"{folder.name}: timm_wrapper architecture {str(arch)[:80]!r} is not a "
                                         f"timm model that timm builds locally")
    safe_model_args(config, f"{folder.name}/{CONFIG}")


def model_preprocessing(folder: Path, config: dict):
    """The model's own preprocessing: its ``preprocessor_config.json``, or a timm wrapper's ``pretrained_cfg``.

    A Trainer fine-tune of a timm model keeps its processor in ``config.json``:
    timm's ``pretrained_cfg``, resolved as ``TimmWrapperImageProcessor`` resolves
    it (timm's eval transform).
    """
    from plugin.models.preprocessing import processor_preprocessing, read_processor_config
    from plugin.models.torch_blackbox import Preprocessing

    if (folder / PREPROCESSOR).is_file():
        return processor_preprocessing(read_processor_config(folder / PREPROCESSOR))
    if config.get("model_type") == "timm_wrapper":
        pcfg = config.get("pretrained_cfg")
        if not isinstance(pcfg, dict) or not pcfg:
            raise CheckpointError(f"{folder.name}: a timm_wrapper config with no pretrained_cfg; the model's "
                                  f"preprocessing is unknown")
        return Preprocessing.from_pretrained_cfg(pcfg)
    raise CheckpointError(f"{folder}: no {PREPROCESSOR}; the model's preprocessing is unknown")


def _build(folder: Path, info):
    """transformers' model from the folder: safetensors only, offline, no remote code."""
    with offline():  # before transformers reads them; restored after the load
        from transformers import AutoConfig, AutoModelForImageClassification
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        with tempfile.TemporaryDirectory() as tmp:
            src = folder
            if info.weights_file == PICKLE:  # our allowlist + weights_only=True; transformers sees safetensors only
                from safetensors.torch import save_file

                from plugin.models.checkpoint import load_state_dict

                sd = load_state_dict(folder, PICKLE)
                src = Path(tmp)
                (src / CONFIG).write_bytes((folder / CONFIG).read_bytes())
                save_file({k: v.contiguous() for k, v in sd.items()}, str(src / SAFETENSORS))
            try:
                config = AutoConfig.from_pretrained(src, trust_remote_code=False, local_files_only=True)
                model, loading = AutoModelForImageClassification.from_pretrained(
                    src, config=config, trust_remote_code=False, local_files_only=True, use_safetensors=True,
                    output_loading_info=True)
            except ValueError as e:
                if "trust_remote_code" in str(e):
                    raise RemoteCodeError(f"{folder.name}: transformers wants remote code: {str(e)[:200]}") from e
                raise CheckpointError(f"{folder.name}: transformers cannot build it: {str(e)[:300]}") from e
            except (OSError, RuntimeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{folder.name}: weights do not fit {info.architecture}: {str(e)[:300]}") from e
    missing = [*(loading.get("missing_keys") or []), *(loading.get("mismatched_keys") or [])]
    if missing:  # transformers would fill them with random values: that is not the model the repo holds
        raise CheckpointError(f"{folder.name}: weights do not fit {info.architecture}: {len(missing)} tensors "
                              f"missing or mismatched (e.g. {str(missing[0])[:80]})")
    return model.eval()


def logits_module(model):
    """A transformers classifier as a plain ``pixel_values -> logits`` module."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(pixel_values=x).logits

    return Logits(model)
