"""The model-format registry: which loader reads a repo, decided from its files and config, never its name.

Each :class:`ModelFormat` answers three questions about a repo: is it mine
(:meth:`~ModelFormat.detect`, from the file list and the parsed
``config.json`` only, so the crawler can triage a listing without a
download), what does a load need checked without torch
(:meth:`~ModelFormat.preflight`), and the black box itself
(:meth:`~ModelFormat.load`). Formats are tried in registration order:
transformers (``architectures``/``model_type``), timm (``architecture``),
ONNX (``model.onnx``). A repo none of them claims gets an explicit
*unsupported* answer that names what it holds (Keras, fastai, TorchScript or
a raw pickle...), never "corrupt" and never "encoder".
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol

from plugin.core.errors import CheckpointError
from plugin.core.registry import Registry
from plugin.models.format_types import (PREPROCESSOR, README, Detected, RemoteCodeError,  # noqa: F401 - the API
                                        UnsupportedFormatError, read_folder_config)
from plugin.models.hub_layout import CONFIG, WEIGHTS_PREFERENCE, is_classifier


class ModelFormat(Protocol):
    name: str

    def detect(self, names: frozenset[str], config: dict | None) -> Detected | None:
        """This format's reading of the repo, or None when it is not this format."""

    def preflight(self, folder: Path):
        """Every check that needs no model code: returns a :class:`~plugin.models.checkpoint.CheckpointInfo`."""

    def load(self, folder: Path, **kwargs):
        """The hard-label black box (a :class:`~plugin.core.blackbox.CountingBlackBox`)."""


FORMATS: Registry[ModelFormat] = Registry("model format")
# transformers first: a TimmWrapper config carries timm's ``architecture`` key too; ONNX only when no torch weights.
DETECTION_ORDER = ("transformers", "timm", "onnx")

# Files that say what a repo holds when no registered format claims it; the first match names it.
UNSUPPORTED = (
    ((".keras", ".h5", ".hdf5"), "keras", "Keras (.h5/.keras)"),
    (("saved_model.pb", ".pb"), "tensorflow", "TensorFlow SavedModel"),
    ((".pkl",), "fastai", "fastai/pickle export (.pkl)"),
    ((".torchscript", ".ptl"), "torchscript", "TorchScript"),
    ((".pt", ".pth", ".bin", ".ckpt"), "pytorch-pickle", "a raw PyTorch pickle (.pt/.pth/.bin/.ckpt) or TorchScript, "
                                                        "with no config a loader reads"),
    ((".msgpack",), "flax", "Flax weights (.msgpack)"),
    ((".gguf",), "gguf", "GGUF"),
    ((".joblib",), "sklearn", "a joblib/scikit-learn pickle"),
)


def _unsupported(names: frozenset[str]) -> Detected:
    for suffixes, fmt, what in UNSUPPORTED:
        if any(n.lower().endswith(suffixes) for n in names):
            return Detected(fmt, supported=False, reason=f"unsupported model format: {what}", library=fmt)
    return Detected("none", supported=False, reason="no model weights in a format we read "
                                                     "(timm, transformers, ONNX)")


def detect(names: Iterable[str], config: dict | None) -> Detected:
    """The format of a repo from its file names and parsed ``config.json`` (None when it has none)."""
    names = frozenset(names)
    cfg = config if isinstance(config, dict) else None
    order = [*DETECTION_ORDER, *(n for n in FORMATS.names() if n not in DETECTION_ORDER)]
    for name in order:
        found = FORMATS.get(name).detect(names, cfg)
        if found is not None:
            return found
    return _unsupported(names)


def detect_folder(folder: str | Path) -> Detected:
    """:func:`detect` on a local folder (its top-level and nested file names, its config)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return detect(names, read_folder_config(folder))


def format_of(folder: str | Path) -> tuple[ModelFormat, Detected]:
    """The registered format that reads ``folder``.

    Raises:
        RemoteCodeError: the config asks for remote code.
        UnsupportedFormatError: no registered format reads it.
    """
    found = detect_folder(folder)
    if found.refused:
        raise RemoteCodeError(f"{Path(folder).name}: refused, {found.reason}")
    if not found.supported:
        raise UnsupportedFormatError(f"{Path(folder).name}: {found.reason}", found.format)
    return FORMATS.get(found.format), found


def file_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of each file the folder's format reads: the model's identity, with no check beyond detection.

    Checking the files is the load's job, inside the run, so that a broken one still gets its FAILED run.
    """
    from plugin.models.checkpoint import sha256_file

    _, found = format_of(folder)
    return {n: sha256_file(Path(folder) / n) for n in found.files if (Path(folder) / n).is_file()}


def preflight(folder: str | Path):
    """Static checks of ``folder`` by its format (config limits, weights headers, pickle allowlist, ONNX domains)."""
    fmt, _ = format_of(folder)
    return fmt.preflight(Path(folder))


def load_blackbox(folder: str | Path, **kwargs):
    """Loads ``folder`` as a hard-label black box through its format."""
    fmt, _ = format_of(folder)
    return fmt.load(Path(folder), **kwargs)


class TimmFormat:
    """timm's hub layout: ``config.json`` with ``architecture`` and one weights file (README's layout)."""

    name = "timm"

    def detect(self, names: frozenset[str], config: dict | None) -> Detected | None:
        if config is None or not isinstance(config.get("architecture"), str) or "architectures" in config:
            return None
        weights = next((n for n in WEIGHTS_PREFERENCE if n in names), None)
        if weights is None and _unsupported(names).format != "none":
            return None  # a timm config beside weights of another kind: the fallback names them
        encoder = not is_classifier(config)
        if weights is None:  # a broken timm repo: nothing to fetch, failed (failed-corrupt), never "unsupported"
            return Detected("timm", (), library="timm", reason=f"no weights file ({', '.join(WEIGHTS_PREFERENCE)})")
        return Detected("timm", (CONFIG, weights), encoder=encoder, library="timm",
                        pipeline_tag="image-feature-extraction" if encoder else "image-classification",
                        reason="num_classes is 0 (a feature encoder)" if encoder else "")

    def preflight(self, folder: Path):
        from plugin.models.checkpoint import preflight

        return preflight(folder)

    def load(self, folder: Path, **kwargs):
        from plugin.models.torch_blackbox import TorchBlackBox

        return TorchBlackBox.from_folder(folder, **kwargs)


from plugin.models.transformers_format import TransformersFormat  # noqa: E402 - registered in detection order below
from plugin.models.onnx_format import OnnxFormat  # noqa: E402

FORMATS.register("transformers", TransformersFormat())
FORMATS.register("timm", TimmFormat())
FORMATS.register("onnx", OnnxFormat())
