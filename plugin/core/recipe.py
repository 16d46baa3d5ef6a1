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

# Nodes too generic to be called a model's domain (README "What the verdict says").
VAGUE_DOMAINS = ("entity", "physical entity", "abstraction", "abstract entity", "object", "whole", "artifact",
                 "thing", "matter", "covering", "commodity", "consumer goods", "instrumentality", "living thing",
                 "organism", "causal agent", "group", "psychological feature", "attribute", "measure",
                 "communication", "relation", "part", "unit")


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
    # Step 1 at scale (README "Performance at ImageNet scale")
    score_pass: str = "adaptive"  # adaptive | exhaustive (images_per_leaf to every leaf)
    adaptive_first_images: int = 4  # images per leaf in the first round
    adaptive_growth: float = 2.0  # images per open leaf multiply by this each round
    adaptive_z: float = 2.0  # confidence bound that closes a leaf (decided for every class)
    adaptive_halving: bool = False  # keep only the more promising half of the open leaves each round (a budget device:
    # it closes leaves that are not decided, and costs the demo ground truth 4 classes)
    adaptive_precision: float = 0.07  # a candidate leaf is refined until its score's half-width at confidence_z is this
    adaptive_copy_agreement: bool = True  # count copies as evidence by how alike they are labelled (Kish), else 1 image
    adaptive_settle: bool = True  # stop once every answer is stable and no barely measured leaf could overturn one
    leaf_query_budget: int | None = None  # per-leaf cap on queries (images_per_leaf x copies when unset)
    min_samples_fraction: float = 0.75  # generality scales with supply: min_samples <= this x images a leaf can give
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
    singleton_candidates: bool = True  # every strong leaf is also a cluster of its own (K = n), and with its near neighbours
    coherence_anchor_score: float = 0.6  # a class's own best this strong ...
    coherence_anchor_classes: int = 1  # ... and near this many other classes' own bests is not pulled far away
    coherence_anchor_spread: float = 0.5  # ... unless its own best is a sink: its leaves go to fewer distinct classes
    sink_contrast: float = 0.5  # weight of what the class absorbs around a cluster (the sink null model), subtracted
    sink_radius: float = 4.0  # ... from the leaves within this many hops of a member
    domain_radius: float = 6.0  # a class prefers clusters near which another class takes leaves (0: off)
    filter_all: bool = False  # step 4 queries every unsent image of the chosen leaves (else until min_samples came back)
    # Stability (README "Stability"): bootstrap over images within leaves, steps 2-4 per resample, no queries
    stability_resamples: int = 16  # resamples of the pass's own evidence (0: no bootstrap, every answer counts as stable)
    stability_min: float = 0.7  # a class whose modal domain comes back in fewer resamples is "uncertain", not found
    # Runner-up and model-level flags (README "Flags")
    runner_up_min_distance: float = 10.0  # hops between domains for "another domain" (garment-digit is 14)
    ambiguity_margin: float = 0.1  # ambiguous: the runner-up's functional score is within this of the chosen one
    decoy_min_classes: int = 3  # decoy-suspected: this many classes share a strong runner-up domain ...
    decoy_min_score: float = 0.5  # ... each runner-up at least this functional score ...
    decoy_min_one_to_one: float = 0.8  # ... and distinct leaves per class over classes at least this
    mixed_domain_distance: float = 10.0  # mixed-domains: found classes split into groups this many hops apart
    sink_min_leaves: int = 5  # sink-class: a class takes this many leaves far from its own domain ...
    sink_min_score: float = 0.5  # ... each at this support-adjusted score or more
    weak_alpha: float = 0.3  # alpha for weak guesses: a share of hits always favours "everything"
    weak_min_hits: int = 2  # open world: copies labelled i a leaf needs to enter a weak domain guess
    # The model-level verdict
    verdict_max_span: float = 6.0  # one domain only if every class domain is within this many hops of the LCA
    verdict_min_depth: int = 4  # ... and the LCA is at least this deep ("artifact" is 4, "object" 2)
    verdict_min_found: int = 2  # below this many found classes the verdict is "inconclusive"
    verdict_min_fraction: float = 0.5  # ... or below this fraction of the model's classes
    verdict_vague: tuple[str, ...] = VAGUE_DOMAINS  # never a domain: the verdict lists per-class domains instead
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
        if self.min_samples < 0:
            problems.append("min_samples must be >= 0")
        if not 0 <= self.verdict_min_fraction <= 1:
            problems.append("verdict_min_fraction must be in [0, 1]")
        if self.query_budget is not None and self.query_budget < 1:
            problems.append("query_budget must be >= 1")
        if self.decoy_min_classes < 2 or self.sink_min_leaves < 1 or not 0 <= self.decoy_min_one_to_one <= 1:
            problems.append("need decoy_min_classes >= 2, sink_min_leaves >= 1, decoy_min_one_to_one in [0, 1]")
        if self.score_pass not in ("adaptive", "exhaustive"):
            problems.append("score_pass must be 'adaptive' or 'exhaustive'")
        if self.adaptive_first_images < 1 or self.adaptive_growth <= 1 or self.adaptive_z < 0:
            problems.append("need adaptive_first_images >= 1, adaptive_growth > 1 and adaptive_z >= 0")
        if not 0 < self.adaptive_precision <= 1:
            problems.append("adaptive_precision must be in (0, 1]")
        if self.leaf_query_budget is not None and self.leaf_query_budget < self.copies_per_image:
            problems.append("leaf_query_budget must allow at least one image (copies_per_image queries)")
        if self.stability_resamples < 0 or not 0 <= self.stability_min <= 1:
            problems.append("need stability_resamples >= 0 and stability_min in [0, 1]")
        if not 0 < self.min_samples_fraction <= 1:
            problems.append("min_samples_fraction must be in (0, 1]")
        if self.seed < 0:
            problems.append("seed must be >= 0")
        if problems:
            raise ConfigError("invalid recipe: " + "; ".join(problems))

    @property
    def copies_per_image(self) -> int:
        return self.transforms_per_image + int(self.include_original)

    @classmethod
    def from_dict(cls, data: dict | None, source: str | None = None) -> "Recipe":
        """A recipe from a mapping; ``source`` (the file) names where a bad key came from."""
        data = dict(data or {})
        where = f" {source}" if source else ""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown recipe keys {unknown} in recipe{where}; valid keys: {sorted(names)}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, value in list(data.items()):
            data[key] = _typed(key, value, types[key], where)
        try:
            return cls(**data)
        except (TypeError, ConfigError) as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from e

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
        return cls.from_dict(data, source=str(p))

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


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "dict": "a mapping",
          "int | None": "an integer or null", "tuple[str, ...]": "a list of names"}


def _typed(key: str, value, annotation: str, source: str):  # source: "" or " <file>"
    """``value`` checked against the field's annotation; one line naming key and file otherwise."""
    kind = str(annotation)
    ok, out = True, value
    if kind == "int" or (kind == "int | None" and value is not None):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        out = float(value) if ok else value
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "dict":
        out = value if value is not None else {}
        ok = isinstance(out, dict)
    elif kind.startswith("tuple"):
        out = () if value is None else value
        ok = isinstance(out, (list, tuple)) and all(isinstance(v, str) for v in out)
        out = tuple(out) if ok else out
    if not ok:
        raise ConfigError(f"invalid recipe{source}: key {key!r} must be {_KINDS.get(kind, kind)}, got {value!r}")
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
