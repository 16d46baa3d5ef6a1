"""Stable Diffusion (``diffusers``) and CLIP (``transformers``) behind the two protocols, from local folders.

Untrusted weights never run code: a folder is checked before anything is
imported from it (safetensors weights only, no Python files, no ``auto_map``,
a pipeline class from the allowlist), then loaded with ``use_safetensors=True``
and ``local_files_only=True`` with the Hub switched off. Torch, diffusers and
transformers are imported inside the functions: importing this module is cheap
and works without the ``[generative]`` extra.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from plugin.core.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from plugin.core.registry import Registry
from plugin.core.settings import offline
from plugin.generative.config import GenerativeConfig
from plugin.generative.protocols import Encoder, Generator

INSTALL_HINT = ("Method 1 needs the generative extra: pip install 'mlflow-domain-finder[generative]' (diffusers), "
                "then point --generative at a local Stable Diffusion folder (model_index.json, unet/, vae/, "
                "text_encoder/, tokenizer/, scheduler/; safetensors) and --clip at a local CLIP folder "
                "(e.g. openai/clip-vit-large-patch14 saved with safetensors)")
PIPELINES = ("StableDiffusionPipeline",)  # model_index.json classes we load; anything else may want custom code
# Where a pipeline component's class may come from: the two libraries, or diffusers' own stable_diffusion
# module (SD 1.x folders name their safety checker so; we never load it).
LIBRARIES = ("diffusers", "transformers", "stable_diffusion")
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SD_WEIGHTS = ("unet", "vae", "text_encoder")  # the components that carry weights

GENERATORS: Registry[Callable[[GenerativeConfig], Generator]] = Registry("generator", group="domain_finder.generators")
ENCODERS: Registry[Callable[[GenerativeConfig], Encoder]] = Registry("encoder", group="domain_finder.encoders")


def require_extra() -> None:
    """Raises a one-line ConfigError naming what to install and which weights to point at."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT} ({e.name or e} is missing)") from e


def _no_code(folder: Path, what: str) -> None:
    code = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py"))
    if code:
        raise UnsafeCheckpointError(f"{what} {folder}: contains Python code ({', '.join(code[:3])}); "
                                    "remote code is never run")
    for cfg in folder.rglob("*.json"):
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{what} {folder}: unreadable {cfg.relative_to(folder)} ({e})") from e
        if isinstance(data, dict) and ("auto_map" in data or "custom_pipeline" in data):
            raise UnsafeCheckpointError(f"{what} {folder}: {cfg.relative_to(folder)} asks for remote code "
                                        "(auto_map); remote code is never run")


def _weights(folder: Path, what: str) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES) if folder.is_dir() else []
    if pickles:
        raise UnsafeCheckpointError(f"{what} {folder}: only pickle weights ({', '.join(pickles[:3])}); "
                                    "convert them to safetensors")
    raise CheckpointError(f"{what} {folder}: no .safetensors weights")


def check_sd_folder(path: str | Path) -> Path:
    """A Stable Diffusion folder we may load, or a one-line CheckpointError saying why not."""
    folder = Path(path).expanduser()
    what = "--generative"
    if not folder.is_dir():
        raise CheckpointError(f"{what} {path}: no such folder (give a local Stable Diffusion folder)")
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"{what} {path}: no model_index.json (not a diffusers pipeline folder)")
    _no_code(folder, what)
    data = json.loads(index.read_text(encoding="utf-8"))
    if data.get("_class_name") not in PIPELINES:
        raise UnsafeCheckpointError(f"{what} {path}: pipeline {data.get('_class_name')!r} is not one of {PIPELINES}")
    for name, spec in data.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if spec[0] not in LIBRARIES:
            raise UnsafeCheckpointError(f"{what} {path}: component {name} comes from {spec[0]!r}, not from "
                                        f"{', '.join(LIBRARIES)}")
    for name in (*SD_WEIGHTS, "tokenizer", "scheduler"):
        if not isinstance(data.get(name), list) or not (folder / name).is_dir():
            raise CheckpointError(f"{what} {path}: component {name}/ is missing")
    for name in SD_WEIGHTS:
        _weights(folder / name, what)
    return folder


def check_clip_folder(path: str | Path) -> Path:
    """A CLIP folder we may load, or a one-line CheckpointError saying why not."""
    folder = Path(path).expanduser()
    what = "--clip"
    if not folder.is_dir():
        raise CheckpointError(f"{what} {path}: no such folder (give a local CLIP folder)")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{what} {path}: no config.json (not a transformers CLIP folder)")
    _no_code(folder, what)
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != "clip":
        raise CheckpointError(f"{what} {path}: model_type {model_type!r}, expected 'clip'")
    _weights(folder, what)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise CheckpointError(f"{what} {path}: no tokenizer (tokenizer.json or vocab.json)")
    return folder


def validate(config: GenerativeConfig) -> None:
    """Everything that can be checked before the first query: the extra, both folders, backends, device."""
    if not config.sd_dir or not config.clip_dir:
        raise ConfigError("Method 1 needs both weights: --generative SD_DIR and --clip CLIP_DIR "
                          "(check options sd_dir and clip_dir)")
    GENERATORS.get(config.generator)
    ENCODERS.get(config.encoder)
    if config.generator == "diffusers" or config.encoder == "clip":
        require_extra()
    if config.generator == "diffusers":
        check_sd_folder(config.sd_dir)
    if config.encoder == "clip":
        check_clip_folder(config.clip_dir)
    device_and_dtype(config)


def device_and_dtype(config: GenerativeConfig) -> tuple[str, str]:
    """(device, dtype): fp16 on CUDA and fp32 on CPU unless set; fp16 on CPU is refused."""
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"generative device {device!r}: no CUDA device here (use device: auto or cpu)")
    elif device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"generative device {device!r}: expected auto, cpu or cuda[:N]")
    dtype = config.dtype if config.dtype != "auto" else ("float16" if device.startswith("cuda") else "float32")
    if dtype == "float16" and device == "cpu":
        raise ConfigError("generative dtype float16 needs a CUDA device; use float32 or bfloat16 on CPU")
    return device, dtype


def _chunks(n: int, size: int) -> Iterator[slice]:
    for a in range(0, n, size):
        yield slice(a, min(n, a + size))


class DiffusersGenerator:
    """A Stable Diffusion pipeline conditioned directly on text-encoder hidden states (``prompt_embeds``)."""

    def __init__(self, pipe, *, device: str, steps: int, guidance: float, image_size: int, batch_size: int):
        self.pipe, self.device = pipe, device
        self.steps, self.guidance, self.batch_size = steps, guidance, batch_size
        self.image_size = image_size or None  # None: the pipeline's default (unet sample size x vae scale)
        self._uncond = None

    def encode_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        import torch

        tok = self.pipe.tokenizer
        out = []
        with torch.inference_mode():
            for part in _chunks(len(prompts), self.batch_size):
                ids = tok(list(prompts[part]), padding="max_length", max_length=tok.model_max_length,
                          truncation=True, return_tensors="pt").input_ids.to(self.device)
                out.append(self.pipe.text_encoder(ids)[0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def generate(self, embeddings: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        import torch

        emb = np.asarray(embeddings, np.float32)
        pairs = [(i, s) for i in range(len(emb)) for s in seeds]
        dtype = self.pipe.unet.dtype
        guided = self.guidance > 1.0
        if guided and self._uncond is None:
            self._uncond = self.encode_prompts([""])[0]
        images = []
        for part in _chunks(len(pairs), self.batch_size):
            chunk = pairs[part]
            cond = torch.from_numpy(np.stack([emb[i] for i, _ in chunk])).to(self.device, dtype)
            neg = (torch.from_numpy(np.stack([self._uncond] * len(chunk))).to(self.device, dtype) if guided else None)
            # One generator per image: an image depends on its embedding and seed only, never on the batch.
            gens = [torch.Generator(self.device).manual_seed(int(s)) for _, s in chunk]
            with torch.inference_mode():
                out = self.pipe(prompt_embeds=cond, negative_prompt_embeds=neg, generator=gens,
                                num_inference_steps=self.steps, guidance_scale=self.guidance,
                                height=self.image_size, width=self.image_size, output_type="np").images
            images.append(np.clip(np.round(np.asarray(out, np.float32) * 255), 0, 255).astype(np.uint8))
        flat = np.concatenate(images)
        return flat.reshape(len(emb), len(seeds), *flat.shape[1:])


class ClipEncoder:
    """CLIP's joint space: projected text features and projected image features."""

    def __init__(self, model, tokenizer, processor, *, device: str, batch_size: int):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.device, self.batch_size = device, batch_size

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        def run(part):
            t = self.tokenizer(list(prompts[part]), padding=True, truncation=True, return_tensors="pt")
            return self.model.get_text_features(**{k: v.to(self.device) for k, v in t.items()})

        return self._batched(len(prompts), run)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        images = list(images)

        def run(part):
            px = self.processor(images=images[part], return_tensors="pt").pixel_values
            return self.model.get_image_features(pixel_values=px.to(self.device, self.model.dtype))

        return self._batched(len(images), run)

    def _batched(self, n: int, run) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for part in _chunks(n, self.batch_size):
                feats = run(part)
                feats = getattr(feats, "pooler_output", feats)  # transformers 5 returns the output object
                out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _prepare(config: GenerativeConfig, check: Callable[[str], Path], path: str):
    """(folder, device, torch dtype) once the extra, the folder and the device have passed their checks."""
    require_extra()
    folder = check(path)
    device, dtype = device_and_dtype(config)
    import torch

    return folder, device, getattr(torch, dtype)


@GENERATORS.register("diffusers")
def load_diffusers_generator(config: GenerativeConfig) -> DiffusersGenerator:
    """The Stable Diffusion pipeline in ``config.sd_dir`` (checked first), on the config's device and dtype."""
    folder, device, dtype = _prepare(config, check_sd_folder, config.sd_dir)
    from diffusers import StableDiffusionPipeline

    with offline(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*")  # newer diffusers say dtype; >=0.30 needs this
        pipe = StableDiffusionPipeline.from_pretrained(
            folder, torch_dtype=dtype, use_safetensors=True, local_files_only=True,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return DiffusersGenerator(pipe, device=device, steps=config.steps, guidance=config.guidance,
                              image_size=config.image_size, batch_size=config.batch_size)


@ENCODERS.register("clip")
def load_clip_encoder(config: GenerativeConfig) -> ClipEncoder:
    """The CLIP model in ``config.clip_dir`` (checked first), with its tokenizer and image processor."""
    folder, device, dtype = _prepare(config, check_clip_folder, config.clip_dir)
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    with offline():
        model = CLIPModel.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                          local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        if (folder / "preprocessor_config.json").is_file():
            processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
        else:  # CLIP's own preprocessing at the model's resolution
            size = model.config.vision_config.image_size
            processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return ClipEncoder(model.to(device).eval(), tokenizer, processor, device=device, batch_size=config.batch_size)


def load(config: GenerativeConfig) -> tuple[Generator, Encoder]:
    """The configured generator and encoder, validated before either is loaded."""
    validate(config)
    return GENERATORS.get(config.generator)(config), ENCODERS.get(config.encoder)(config)


def load_embeddings(path: str | Path) -> np.ndarray:
    """Embeddings saved by the generative check (``embeddings.npy``), read without pickle."""
    return np.load(Path(path), allow_pickle=False)


def sample(generator: Generator, embeddings: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
    """More samples of a found domain: ``(k, len(seeds), h, w, 3)`` uint8, reproducible per seed."""
    return np.asarray(generator.generate(np.asarray(embeddings, np.float32), list(seeds)))
