"""Method 1 on the command line: ``investigate --generative SD_DIR --clip CLIP_DIR`` and ``generative-sample``."""
from __future__ import annotations

import argparse
from pathlib import Path

from plugin.cli.common import positive_int
from plugin.core.errors import ConfigError
from plugin.core.recipe import Recipe
from plugin.generative.config import CLASS_SELECTIONS, GenerativeConfig

NAME = "generative"


def add_options(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("Method 1 (generative; needs pip install '.[generative]' and local weights)")
    g.add_argument("--generative", metavar="SD_DIR", default=None,
                   help="after the corpus search, search a local Stable Diffusion folder's text space for the "
                        "classes the corpus left unsettled")
    g.add_argument("--clip", metavar="CLIP_DIR", default=None, help="local CLIP folder for --generative")
    g.add_argument("--generative-classes", choices=CLASS_SELECTIONS, default=None,
                   help="which classes to search by generation (default: unsettled)")
    g.add_argument("--generative-budget", type=positive_int, default=None,
                   help="most black-box queries the generative stage may spend")


def apply(args, recipe: Recipe) -> Recipe:
    """The recipe with the generative check and its full config; refused in one line before any query.

    The whole config (defaults too) goes into ``check_options`` so that every knob is logged as an MLflow param.
    The weights and the device are checked by the check's ``validate`` hook in ``plan_investigation``.
    """
    wanted = (args.generative or args.clip or NAME in recipe.checks or NAME in (getattr(args, "check", None) or [])
              or args.generative_classes or args.generative_budget)
    if not wanted:
        return recipe
    given = {"sd_dir": args.generative, "clip_dir": args.clip, "classes": args.generative_classes,
             "max_queries": args.generative_budget}
    options = {**recipe.check_options.get(NAME, {}), **{k: v for k, v in given.items() if v is not None}}
    for key in ("sd_dir", "clip_dir"):
        if options.get(key):
            options[key] = str(Path(options[key]).expanduser().resolve())
    config = GenerativeConfig.from_options(options)
    return recipe.replace(checks=tuple(dict.fromkeys([*recipe.checks, NAME])),
                          check_options={**recipe.check_options, NAME: config.to_options()})


def print_summary(findings) -> None:
    """Per searched class, what generation named it (the run's ``generative`` key), under the check's line."""
    summary = findings.extra.get(NAME) or {}
    for c in summary.get("classes", []):
        top = c["embeddings"][0]["nearest_prompts"][0] if c["embeddings"] else "-"
        print(f"  class {c['index']:4d}: generated {top!r} relevance={c['relevance']:.2f} "
              f"generality={c['generality']:.2f} queries={c['queries']}")


def cmd_sample(args) -> int:
    """Draws more samples from a found domain: the saved embeddings, the sampler the run used, new seeds."""
    import json

    from PIL import Image

    from plugin.generative.real import GENERATORS, load_embeddings, require_extra, sample

    folder = Path(args.folder)
    emb_path = folder / "embeddings.npy" if folder.is_dir() else folder
    if not emb_path.is_file():
        raise ConfigError(f"{args.folder}: no embeddings.npy (give a run's generative/class_NNNN folder)")
    require_extra()
    meta = emb_path.parent / "prompts.json"
    sampler = json.loads(meta.read_text(encoding="utf-8")).get("sampler", {}) if meta.is_file() else {}
    config = GenerativeConfig.from_options({**sampler, "sd_dir": str(Path(args.generative).resolve())})
    generator = GENERATORS.get(config.generator)(config)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    images = sample(generator, load_embeddings(emb_path), seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for e, row in enumerate(images):
        for s, img in zip(seeds, row):
            Image.fromarray(img).save(out / f"embedding{e}_seed{s}.png")
    print(f"{images.shape[0] * images.shape[1]} samples written to {out}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("generative-sample", help="draw more samples from embeddings a generative run saved")
    s.add_argument("folder", help="a run's generative/class_NNNN folder (or its embeddings.npy)")
    s.add_argument("--generative", metavar="SD_DIR", required=True,
                   help="the Stable Diffusion folder it was found with")
    s.add_argument("--seeds", type=positive_int, default=16, help="samples per embedding (default 16)")
    s.add_argument("--first-seed", type=int, default=1_000_000, help="first seed (default 1000000)")
    s.add_argument("--out", required=True, help="folder for the PNGs")
    s.set_defaults(func=cmd_sample)
