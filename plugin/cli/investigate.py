"""``domain-finder investigate``: one model folder, one MLflow run."""
from __future__ import annotations

import argparse
from pathlib import Path

from plugin.cli.common import add_check_options, check_args, resolve_model
from plugin.core.recipe import Recipe
from plugin.investigate import identity_of, investigate


def cmd_investigate(args) -> int:
    recipe = Recipe.load(args.recipe)
    if args.budget is not None:
        recipe = recipe.replace(query_budget=args.budget)
    folder = resolve_model(args.model)
    identity = identity_of(folder, model_id=args.model_id or (args.model if not Path(args.model).is_dir() else None))
    checks, options = check_args(args)
    inv = investigate(folder, args.corpus, recipe, identity=identity, json_out=args.json, run_name=args.run_name,
                      progress=not args.no_progress, checks=checks, check_options=options)
    f = inv.result.findings
    print(f"run {inv.run_id}: {sum(c.found for c in f.classes)}/{f.num_classes} classes found, "
          f"verdict {f.verdict.kind} ({f.verdict.domain.name if f.verdict.domain else '-'}), "
          f"{f.queries} queries, {inv.seconds:.1f} s")
    for c in f.classes:
        if c.found or c.domain:
            print(f"  class {c.index:4d}: {'found' if c.found else 'weak '} {c.domain.name if c.domain else '-':20s} "
                  f"leaves={','.join(n.name for n in c.leaves)} L={c.functional_score:.2f} n={c.n_samples}")
    for name in dict.fromkeys([*recipe.checks, *checks]):
        summary = f.extra.get(name, {})
        print(f"  check {name}: {summary.get('verdict') or summary.get('reason') or summary.get('error') or 'done'}")
    if args.json:
        print(f"findings written to {args.json}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("investigate", help="investigate one model folder (one MLflow run)")
    s.add_argument("model", help="timm hub-layout folder (config.json + weights) or a demo model name")
    s.add_argument("--corpus", default="demo", help="registered corpus name or ImageNet-layout folder (default: demo)")
    s.add_argument("--recipe", default=None, help="recipe YAML or a name in recipes/ (default: built-in defaults)")
    s.add_argument("--json", default=None, help="also write findings.json here")
    s.add_argument("--budget", type=int, default=None, help="maximum number of black-box queries")
    s.add_argument("--model-id", default=None, help="identity to record (default: folder name)")
    s.add_argument("--run-name", default=None)
    s.add_argument("--no-progress", action="store_true")
    add_check_options(s)
    s.set_defaults(func=cmd_investigate)
