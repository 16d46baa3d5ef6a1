"""Recipes: every knob of an investigation, loaded from YAML.

A recipe maps one-to-one onto :class:`Recipe`; unknown keys are an error (a
typo must not silently fall back to a default), and every field is logged as
an MLflow param by :func:`Recipe.to_params`.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from plugin.core.errors import ConfigError



def _recipes_dir() -> Path:
    # ``recipes`` ships as package data: found in a checkout and in an installed wheel alike.
    spec = importlib.util.find_spec("recipes")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    return Path(__file__).resolve().parents[2] / "recipes"


RECIPES_DIR = _recipes_dir()


@dataclass(frozen=True)
class Recipe:
    """Knobs of the corpus search (METHOD.md steps 1-5) and follow-up checks.

    Defaults were chosen on the demo ground-truth models; README "Choosing the
    defaults" records what was tried.
    """

    # Step 1: functional scores
    images_per_leaf: int = 50
    transforms_per_image: int = 3  # R random copies per image
    include_original: bool = True  # the untransformed image is one more copy
    noise: float = 0.06  # uniform noise amplitude, fraction of 255
    translate: float = 0.08  # max shift, fraction of width/height
    rotate: float = 10.0  # max rotation, degrees
    perspective: float = 0.15  # distortion scale of the random perspective
    # Step 2: candidates
    threshold: float = 0.3  # on the support-adjusted functional score
    top_k: int = 16
    confidence_z: float = 1.0  # Wilson lower bound; small leaves are weak evidence
    # Step 3: clustering and the objective
    k_min: int = 1
    k_max: int = 4
    merge_distance: float = 4.0  # merge clusters whose medoids are closer than this
    alpha: float = 0.6  # weight of the functional term
    singleton_semantic: float = 0.33  # S of a one-leaf cluster (closeness at distance 3)
    min_samples: int = 20  # generality: a domain must supply this many filtered images
    coherence: float = 1.0  # weight of closeness to the other classes' domains (0 = per class only)
    coherence_rounds: int = 5
    weak_alpha: float = 0.3  # alpha for weak guesses: a share of hits always favours "everything"
    weak_min_hits: int = 2  # open world: copies labelled i a leaf needs to enter a weak domain guess
    # The model-level verdict
    verdict_max_span: float = 6.0  # one domain only if every class domain is within this many hops of the LCA
    verdict_min_depth: int = 4  # ... and the LCA is at least this deep ("artifact" is 4, "object" 2)
    # Engineering
    seed: int = 0
    batch_size: int = 64
    query_budget: int | None = None
    montage_samples: int = 16
    checks: tuple[str, ...] = ("dataset_index", "label_similarity")  # follow-ups; "aux" and "clone" are opt-in
    check_options: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        problems = []
        if self.images_per_leaf < 1:
            problems.append("images_per_leaf must be >= 1")
        if self.transforms_per_image < 0 or (self.transforms_per_image == 0 and not self.include_original):
            problems.append("need at least one copy per image (transforms_per_image or include_original)")
        if not 0 <= self.threshold <= 1:
            problems.append("threshold must be in [0, 1]")
        if not 0 < self.alpha < 1:
            problems.append("alpha must be in (0, 1)")
        if not 1 <= self.k_min <= self.k_max:
            problems.append("need 1 <= k_min <= k_max")
        if self.top_k < 1:
            problems.append("top_k must be >= 1")
        if problems:
            raise ConfigError("invalid recipe: " + "; ".join(problems))

    @property
    def copies_per_image(self) -> int:
        return self.transforms_per_image + int(self.include_original)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Recipe":
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown recipe keys {unknown}; valid keys: {sorted(names)}")
        if "checks" in data:
            data["checks"] = tuple(data["checks"] or ())
        try:
            return cls(**data)
        except TypeError as e:
            raise ConfigError(f"invalid recipe: {e}") from e

    @classmethod
    def load(cls, path: str | Path | None) -> "Recipe":
        """Loads a YAML recipe; ``None`` gives the defaults.

        A bare name such as ``demo`` is looked up in ``recipes/``.
        """
        if path is None:
            return cls()
        p = Path(path)
        if not p.exists() and (RECIPES_DIR / f"{path}.yaml").is_file():
            p = RECIPES_DIR / f"{path}.yaml"
        if not p.is_file():
            raise ConfigError(f"recipe not found: {path}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from e
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{p}: a recipe must be a mapping of knobs")
        return cls.from_dict(data)

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["checks"] = list(self.checks)
        return d

    def to_params(self) -> dict[str, str]:
        """Flat string params for MLflow (nested check options dotted)."""
        out = {}
        for k, v in self.to_dict().items():
            if isinstance(v, dict):
                flat = _flatten(v)
                out.update({f"{k}.{k2}": str(v2) for k2, v2 in flat.items()} if flat else {k: "{}"})
            else:
                out[k] = ",".join(map(str, v)) if isinstance(v, list) else str(v)
        return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
