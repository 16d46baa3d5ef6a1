"""ONNX image classifiers (``model.onnx``) through onnxruntime, CUDA provider when present.

Labels come from ``config.json`` (``id2label`` or ``label_names``), the
preprocessing from ``preprocessor_config.json`` (or a timm
``pretrained_cfg``). A graph whose nodes or opsets use a domain outside
standard ONNX (a custom op, which needs a native library loaded into the
runtime) is refused, and so is external tensor data (a path out of the file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from plugin.core.blackbox import CountingBlackBox, InputSpec
from plugin.core.errors import CheckpointError, UnsafeCheckpointError, UnsupportedCheckpointError
from plugin.models.format_types import PREPROCESSOR, Detected, read_folder_config
from plugin.models.hub_layout import CONFIG, is_classifier, label_names_of
from plugin.models.limits import MAX_NUM_CLASSES

ONNX = "model.onnx"
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
INPUT_TYPES = frozenset({1, 10})  # TensorProto FLOAT, FLOAT16


class OnnxFormat:
    """``model.onnx`` with the repo's configs for labels and preprocessing."""

    name = "onnx"

    def detect(self, names: frozenset[str], config: dict | None) -> Detected | None:
        if ONNX not in names:
            return None
        files = (ONNX, *(n for n in (CONFIG, PREPROCESSOR) if n in names))
        encoder = config is not None and "num_classes" in config and not is_classifier(config)
        from plugin.models.transformers_format import pipeline_of

        task = "image-feature-extraction" if encoder else pipeline_of(config or {}) or "image-classification"
        return Detected("onnx", files, encoder=encoder, library="onnx", pipeline_tag=task,
                        reason="num_classes is 0 (a feature encoder)" if encoder else "")

    def preflight(self, folder: Path):
        """Graph domains, external data, input and output shapes, labels and preprocessing; nothing runs."""
        import onnx

        from plugin.models.checkpoint import CheckpointInfo, sha256_file

        path = folder / ONNX
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises its own types; all mean "not an ONNX file"
            raise CheckpointError(f"{folder.name}/{ONNX}: not a readable ONNX model ({type(e).__name__}: "
                                  f"{str(e)[:200]})") from e
        image = check_graph(model, f"{folder.name}/{ONNX}")
        cfg = read_folder_config(folder) or {}
        outputs = model.graph.output
        dims = [d.dim_value if d.HasField("dim_value") else None for d in outputs[0].type.tensor_type.shape.dim]
        labels = label_names_of(cfg)
        n = dims[-1] if len(dims) == 2 and dims[-1] else (len(labels) if labels else None)
        if not n or n > MAX_NUM_CLASSES:
            raise CheckpointError(f"{folder.name}/{ONNX}: output shape {dims} names no class count")
        pre = onnx_preprocessing(folder, cfg)
        channels_last([d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim],
                      pre.input_size, f"{folder.name}/{ONNX}")
        files = [ONNX, *(f for f in (CONFIG, PREPROCESSOR) if (folder / f).is_file())]
        archs = cfg.get("architectures") or [cfg.get("architecture") or "onnx"]
        return CheckpointInfo(path=str(folder), architecture=f"onnx:{archs[0]}", num_classes=int(n),
                              label_names=label_names_of({**cfg, "num_classes": int(n)}),
                              pretrained_cfg={"input_size": list(pre.input_size)}, weights_file=ONNX,
                              sha256={f: sha256_file(folder / f) for f in files})

    def load(self, folder: Path, **kwargs):
        info = self.preflight(folder)
        return OnnxBlackBox(folder / ONNX, onnx_preprocessing(folder, read_folder_config(folder) or {}),
                            info.num_classes, info=info, **kwargs)


def check_graph(model, where: str):
    """Refuses custom-op domains (nodes, opsets, functions) and external data; checks one 4-D image input.

    Returns:
        The graph's image input (its ``ValueInfoProto``).

    Raises:
        UnsafeCheckpointError: a custom-op domain.
        CheckpointError: external data or an input that is not an image batch.
    """
    local = {f.domain for f in model.functions}  # model-local functions are defined in the file itself
    domains = {o.domain for o in model.opset_import}
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    domains |= {n.domain for n in nodes}
    custom = sorted(d for d in domains - STANDARD_DOMAINS - local)
    if custom:
        raise UnsafeCheckpointError(f"{where}: uses custom-op domain {custom[0][:60]!r}; refused (a custom op "
                                    f"runs a native library)")
    for t in model.graph.initializer:
        if t.data_location == t.EXTERNAL:
            raise UnsupportedCheckpointError(f"{where}: tensor {t.name[:60]!r} keeps its data in an external file; "
                                             f"not supported")
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise UnsupportedCheckpointError(f"{where}: expected one image input (N, C, H, W), got {len(inputs)} inputs")
    if inputs[0].type.tensor_type.elem_type not in INPUT_TYPES:
        raise UnsupportedCheckpointError(f"{where}: image input of ONNX type {inputs[0].type.tensor_type.elem_type}; "
                                         f"only float32 and float16 inputs are fed")
    return inputs[0]


def channels_last(shape, input_size, where: str) -> bool:
    """Whether an image input of ``shape`` takes ``(N, H, W, 3)``, given the preprocessing's ``(3, H, W)``.

    A static dim must be the preprocessing's: channels first ``(N, 3, H, W)``, as
    transformers and timm export, or channels last, as TensorFlow exports. Anything
    else would fail inside onnxruntime on the first batch, after the run started.
    """
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    want = tuple(input_size)

    def fits(expected):
        return all(g is None or g == e for g, e in zip(dims[1:], expected))

    if fits(want):
        return False
    if fits((want[1], want[2], want[0])):
        return True
    raise UnsupportedCheckpointError(f"{where}: image input {['?' if d is None else d for d in dims]} does not take "
                                     f"the preprocessing's {list(want)} images")


def onnx_preprocessing(folder: Path, cfg: dict):
    """From ``preprocessor_config.json``, else a timm ``pretrained_cfg`` in ``config.json``."""
    from plugin.models.preprocessing import processor_preprocessing, read_processor_config
    from plugin.models.torch_blackbox import Preprocessing

    if (folder / PREPROCESSOR).is_file():
        return processor_preprocessing(read_processor_config(folder / PREPROCESSOR))
    if isinstance(cfg.get("pretrained_cfg"), dict) and cfg["pretrained_cfg"].get("input_size"):
        return Preprocessing.from_pretrained_cfg(cfg["pretrained_cfg"])
    raise CheckpointError(f"{folder.name}: no {PREPROCESSOR} and no pretrained_cfg; the model's preprocessing "
                          f"is unknown")


def providers() -> list[str]:
    """CUDA first when onnxruntime has it, then the CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OnnxBlackBox(CountingBlackBox):
    """An onnxruntime session seen through its argmax only; float32 inputs built on the CPU."""

    def __init__(self, path: Path, preprocessing, num_classes: int, *, batch_size: int = 64,
                 budget: int | None = None, info=None, device: str | None = None, **_):
        super().__init__(num_classes=num_classes, budget=budget)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers())
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32  # an fp16 export takes fp16
        # A TensorFlow export takes channels last: the same images, transposed at the session's door.
        self._channels_last = channels_last(inp.shape, preprocessing.input_size, path.name)
        first = inp.shape[0]
        self._static = isinstance(first, int) and first > 0  # a static batch dim is kept: the last chunk is padded
        self._batch = first if self._static else batch_size
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.device = "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.info = info

    @property
    def input_spec(self) -> InputSpec:
        p = self.preprocessing
        return InputSpec(size=(p.input_size[1], p.input_size[2]), crop_pct=p.crop_pct, crop_mode=p.crop_mode,
                         interpolation=p.interpolation, mean=tuple(p.mean), std=tuple(p.std), device="cpu",
                         dtype="float32", crop_offset=p.crop_offset, bgr=p.bgr)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(x), self._batch):
            chunk = x[start:start + self._batch]
            n = len(chunk)
            pad = self._batch - n if self._static else 0
            if pad > 0:  # keep only the chunk's own rows
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            if self._channels_last:
                chunk = chunk.transpose(0, 2, 3, 1)
            logits = self._session.run(None, {self._input: np.ascontiguousarray(chunk, self._dtype)})[0]
            out.append(np.asarray(logits, dtype=np.float32).argmax(axis=1)[:n])
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self._run(self.preprocessing(images).numpy())

    def _predict_tensor(self, batch) -> np.ndarray:
        return self._run(batch.float().cpu().numpy())
