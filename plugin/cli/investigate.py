"""``domain-finder investigate``: one model folder, one MLflow run."""
from __future__ import annotations

from pathlib import Path

from plugin import tracking
from plugin.cli import generative
from plugin.cli.common import add_check_options, add_run_options, check_args, positive_int, resolve_model
from plugin.core.recipe import Recipe
from plugin.investigate import identity_of, investigate, plan_investigation


def cmd_investigate(args) -> int:
    # Everything is validated before a run exists or a query is spent.
    recipe = Recipe.load(args.recipe)
    if args.budget is not None:
        recipe = recipe.replace(query_budget=args.budget)
    recipe = generative.apply(args, recipe)
    checks, options = check_args(args)
    progress = not args.no_progress
    plan = plan_investigation(args.corpus, recipe, checks, options, args.json, progress)
    folder = resolve_model(args.model, progress)
    identity = identity_of(folder, model_id=args.model_id or (args.model if not Path(args.model).is_dir() else None))
    with tracking.experiment(args.experiment):
        inv = investigate(folder, plan.corpus, recipe, identity=identity, json_out=args.json, run_name=args.run_name,
                          progress=progress, plan=plan, recipe_name=args.recipe)
    f = inv.result.findings
    v = f.verdict
    print(f"run {inv.run_id}: {v.answer}")
    print(f"  confidence {v.confidence:.2f}, stability {f.stability:.2f}; {v.classes_found}/{f.num_classes} classes "
          f"found; {f.queries} search "
          f"queries (at most {plan.queries} planned); {inv.seconds:.1f} s")
    for c in f.classes:
        if c.found or c.domain:
            status = "found" if c.found else "uncertain" if c.status == "uncertain" else "weak"
            print(f"  class {c.index:4d}: {status:9s} {c.domain.name if c.domain else '-':20s} "
                  f"leaves={','.join(n.name for n in c.leaves)} L={c.functional_score:.2f} n={c.n_samples} "
                  f"stability={c.stability:.2f} confidence={c.confidence:.2f}")
    for name in plan.checks:
        summary = f.extra.get(name, {})
        print(f"  check {name}: {summary.get('verdict') or summary.get('reason') or summary.get('error') or 'done'}")
    generative.print_summary(f)
    if args.json:
        print(f"findings written to {args.json}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("investigate", help="investigate one model folder (one MLflow run)")
    s.add_argument("model", help="a model folder (timm or transformers layout, or model.onnx with its configs) "
                                 "or a demo model name")
    s.add_argument("--corpus", default="demo", help="registered corpus name or ImageNet-layout folder (default: demo)")
    s.add_argument("--recipe", default=None, help="recipe YAML or a name in recipes/ (default: built-in defaults)")
    s.add_argument("--json", default=None, help="also write findings.json here")
    s.add_argument("--budget", type=positive_int, default=None,
                   help="maximum number of black-box queries (refused up front if the plan needs more)")
    s.add_argument("--model-id", default=None, help="identity to record (default: folder name)")
    s.add_argument("--run-name", default=None)
    add_run_options(s)
    add_check_options(s)
    generative.add_options(s)
    s.set_defaults(func=cmd_investigate)
