"""Every knob of the generative search (Method 1), validated once and frozen.

The check's options map one-to-one onto :class:`GenerativeConfig`: an unknown
key or a bad value is a one-line :class:`~plugin.core.errors.ConfigError`
before the first query, and :meth:`GenerativeConfig.to_options` is what the
CLI puts into the recipe's ``check_options`` so that every knob, defaults
included, is logged as an MLflow param (``recipe.check_options.generative.*``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from plugin.core.errors import ConfigError

CLASS_SELECTIONS = ("unsettled", "all")  # unsettled: unfound, ambiguous or uncertain after the corpus search
DTYPES = ("auto", "float32", "float16", "bfloat16")  # auto: fp16 on CUDA, fp32 on CPU


@dataclass(frozen=True)
class GenerativeConfig:
    """Method 1's recipe: what to load, which classes, the search and the sampler."""

    sd_dir: str = ""  # a local Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, ...)
    clip_dir: str = ""  # a local CLIP folder (config.json, model.safetensors, tokenizer, preprocessor)
    generator: str = "diffusers"  # registered generator backend
    encoder: str = "clip"  # registered encoder backend
    classes: str = "unsettled"  # unsettled | all
    # The search (the talk's iterative top-k over text-space embeddings)
    k: int = 4  # embeddings kept per class (the talk's small fixed k)
    pool: int = 12  # candidates scored per round (the k kept plus pool - k new ones)
    rounds: int = 3  # expansion rounds after the warm start
    seeds: int = 4  # samples per embedding for both terms of the objective (the same seeds for every candidate)
    lam: float = 0.5  # lambda: weight of generality against functional relevance
    start_prompts: int = 12  # warm-start prompts at most (lemmas and glosses of the corpus's leaves)
    interpolate: float = 0.4  # share of new candidates made by interpolating two kept ones
    perturb: float = 0.3  # ... by perturbing one; the rest are prompt edits from WordNet neighbours
    perturb_scale: float = 0.3  # std of the perturbation of a candidate's prompt weights
    max_queries: int | None = None  # cap on the whole stage's queries (besides the recipe's query_budget)
    min_relevance: float = 0.5  # a class is named by generation when its kept set reaches this relevance
    # The sampler
    steps: int = 25  # denoising steps
    guidance: float = 7.5  # classifier-free guidance scale (1 = none)
    image_size: int = 0  # pixels; 0 = the pipeline's own default
    dtype: str = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 8  # images per generator call
    montage_seeds: int = 4  # extra samples per kept embedding for the montage (not queried)
    seed: int = 0

    def __post_init__(self):
        problems = []
        if self.classes not in CLASS_SELECTIONS:
            problems.append(f"classes must be one of {list(CLASS_SELECTIONS)}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {list(DTYPES)}")
        if not 1 <= self.k <= self.pool:
            problems.append("need 1 <= k <= pool")
        if self.rounds < 0 or self.seeds < 1 or self.start_prompts < 1:
            problems.append("need rounds >= 0, seeds >= 1 and start_prompts >= 1")
        if self.lam < 0:
            problems.append("lam must be >= 0")
        if min(self.interpolate, self.perturb) < 0 or self.interpolate + self.perturb > 1:
            problems.append("interpolate and perturb are shares: each >= 0, together <= 1")
        if self.perturb_scale <= 0:
            problems.append("perturb_scale must be > 0")
        if self.max_queries is not None and self.max_queries < self.seeds:
            problems.append("max_queries must allow one candidate (>= seeds)")
        if not 0 <= self.min_relevance <= 1:
            problems.append("min_relevance must be in [0, 1]")
        if self.steps < 1 or self.guidance < 0 or self.image_size < 0 or self.batch_size < 1 or self.montage_seeds < 0:
            problems.append("need steps >= 1, guidance >= 0, image_size >= 0, batch_size >= 1, montage_seeds >= 0")
        if self.image_size % 8:
            problems.append("image_size must be a multiple of 8")
        if problems:
            raise ConfigError("invalid generative options: " + "; ".join(problems))

    @property
    def queries_per_class(self) -> int:
        """An upper bound on one class's queries: the warm start, then ``pool - len(kept)`` new candidates a round."""
        return self.seeds * (self.start_prompts + self.rounds * (self.pool - 1))

    @classmethod
    def from_options(cls, options: dict | None) -> "GenerativeConfig":
        """The config from a check's options; unknown keys and wrong types are one-line errors."""
        data = dict(options or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"unknown generative options {unknown}; valid: {sorted(fields)}")
        for key, value in data.items():
            kind = str(fields[key].type)
            if value is None and kind.endswith("None"):
                continue
            want = {"str": str, "int": int, "int | None": int, "float": (int, float)}[kind]
            if isinstance(value, bool) or not isinstance(value, want):
                raise ConfigError(f"generative option {key!r} must be {kind}, got {value!r}")
            if kind == "float":
                data[key] = float(value)
        return cls(**data)

    def to_options(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "GenerativeConfig":
        return dataclasses.replace(self, **changes)
