"""Method 1 benchmark: one investigation with the generative stage, timed, on real weights given by path.

Real Stable Diffusion and CLIP weights cannot be fetched here and no GPU is
lent, so the README's figure for them says "not run". On a machine that has both:

    .venv/bin/python benchmarks/generative_gpu.py --generative /models/sd-1-5 --clip /models/clip-vit-large-patch14
    .venv/bin/python benchmarks/generative_gpu.py --tiny     # tiny random models built offline: plumbing and overhead

It investigates a demo model (default ``digits-fashion``) on the demo corpus
with the generative check for every class, and prints the corpus pass's and the
generative stage's wall time, queries, and per class the kept set's relevance,
generality and nearest prompt.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a bare checkout too


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generative", help="Stable Diffusion folder")
    p.add_argument("--clip", help="CLIP folder")
    p.add_argument("--tiny", action="store_true", help="build tiny random SD + CLIP in a temp folder instead")
    p.add_argument("--model", default="digits-fashion", help="demo model name or a timm hub-layout folder")
    p.add_argument("--recipe", default="demo")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a generative option (repeatable), e.g. --set rounds=5 --set seeds=8")
    args = p.parse_args(argv)
    import yaml

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    from plugin.cli.common import resolve_model
    from plugin.core.recipe import Recipe
    from plugin.investigate import investigate

    options = {"classes": "all"}
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_generative import build_tiny_clip, build_tiny_sd, tiny_options, tiny_tokenizer

        root = Path(tempfile.mkdtemp())
        tok = tiny_tokenizer()
        options.update(tiny_options(build_tiny_sd(root / "sd", tok), build_tiny_clip(root / "clip", tok)))
    elif args.generative and args.clip:
        options.update(sd_dir=args.generative, clip_dir=args.clip)
    else:
        p.error("give --generative SD_DIR --clip CLIP_DIR, or --tiny")
    options.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    recipe = Recipe.load(args.recipe).replace(checks=("generative",), check_options={"generative": options})
    t0 = time.perf_counter()
    inv = investigate(resolve_model(args.model, progress=False), "demo", recipe, progress=False)
    total = time.perf_counter() - t0
    f = inv.result.findings
    g = f.extra["generative"]
    print(f"model {args.model}: corpus pass {inv.result.scores.seconds:.1f} s, {f.queries} queries; "
          f"investigation {total:.1f} s in all")
    print(f"generative: {g.get('queries', 0)} queries, {g.get('verdict') or g.get('reason') or g.get('error')}")
    for c in g.get("classes", []):
        top = c["embeddings"][0]["nearest_prompts"][0] if c["embeddings"] else "-"
        print(f"  class {c['index']}: relevance {c['relevance']:.2f} generality {c['generality']:.3f} "
              f"queries {c['queries']} stopped {c['stopped']}: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
