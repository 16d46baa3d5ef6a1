"""``domain-finder``: the command line.

Each subcommand is a thin shell over importable functions; errors of our own
hierarchy print one clear line and exit 2 instead of a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from plugin.errors import DomainFinderError

EPILOG = """examples:
  domain-finder scan --source demo                    scan the demo hub (the main job)
  domain-finder scan --source hf --author someone     scan the real Hub (HF_ENDPOINT or --endpoint)
  domain-finder schedule --at 02:00 --source hf       rescan every night
  domain-finder demo                                  investigate every demo model directly
  domain-finder investigate footwear --corpus demo    a demo model by name
  domain-finder investigate ./my-model --corpus /data/imagenet/val --recipe recipes/default.yaml --json out.json
  domain-finder build-demo                            build the ground-truth demo models
  domain-finder serve-hub ./mirror --port 8080        serve a hub-layout folder over the HF HTTP API

MLflow: runs go to $MLFLOW_TRACKING_URI (default sqlite:///mlflow.db); open them with
  mlflow ui --backend-store-uri sqlite:///mlflow.db
"""


def resolve_model(spec: str) -> Path:
    """A folder path, or the name of a demo model (built on first use)."""
    from plugin.demo_models import ALL_DEMO_MODELS, build_demo_models, model_dir

    p = Path(spec)
    if p.is_dir():
        return p
    if spec in ALL_DEMO_MODELS:
        build_demo_models()
        return model_dir(spec)
    raise DomainFinderError(f"model {spec!r} is neither a folder nor a demo model ({', '.join(ALL_DEMO_MODELS)})")


def _tracking_default() -> None:
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")


def cmd_investigate(args) -> int:
    from plugin.investigate import identity_of, investigate
    from plugin.recipe import Recipe

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


def check_args(args) -> tuple[list[str], dict]:
    """``--check NAME`` and ``--aux SPEC`` into check names and options."""
    checks = list(args.check or [])
    options: dict = {}
    if args.aux:
        checks.append("aux")
        options["aux"] = {"corpora": list(args.aux)}
    return list(dict.fromkeys(checks)), options


def add_check_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--check", action="append", metavar="NAME",
                   help="also run this follow-up check (repeatable): dataset_index, label_similarity, aux, clone")
    s.add_argument("--aux", action="append", metavar="[LOADER:]NAME=PATH",
                   help="score a flat auxiliary corpus (repeatable): flavia=DIR, flowers102=DIR, any ImageFolder, "
                        "or a built-in demo-fashion / demo-digits-faces")


def cmd_demo(args) -> int:
    """The main job on the embedded demo: every demo model, one run each."""
    from plugin.demo_corpus import load_demo_corpus
    from plugin.demo_models import ALL_DEMO_MODELS, build_demo_models, model_dir
    from plugin.investigate import identity_of, investigate
    from plugin.recipe import Recipe

    t0 = time.time()
    truth = build_demo_models()
    recipe = Recipe.load(args.recipe)
    corpus = load_demo_corpus()
    rows = []
    checks, options = check_args(args)
    for name in args.models or ALL_DEMO_MODELS:
        inv = investigate(model_dir(name), corpus, recipe, identity=identity_of(model_dir(name), model_id=name),
                          run_name=name, progress=not args.no_progress, checks=checks, check_options=options)
        f = inv.result.findings
        rows.append((name, f"{sum(c.found for c in f.classes)}/{f.num_classes}",
                     f"{f.verdict.kind}: {f.verdict.domain.name if f.verdict.domain else '-'}", f.queries, f"{inv.seconds:.0f}s"))
    print_table(["model", "classes found", "domain", "queries", "time"], rows)
    print("\nheld-out accuracies of the demo models (ground truth, never shown to the search): "
          + ", ".join(f"{k} {v['heldout_accuracy']}" for k, v in truth["models"].items() if v["heldout_accuracy"] is not None))
    print(f"total {time.time() - t0:.0f} s. Open the runs with:\n  mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']}")
    return 0


def print_table(header: list[str], rows: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


def cmd_build_demo(args) -> int:
    from plugin.demo_corpus import corpus_table
    from plugin.demo_models import build_demo_models, ground_truth_path, model_dir

    truth = build_demo_models(force=args.force)
    rows = [(k, v["architecture"], v["heldout_accuracy"], v.get("accuracy_floor", "-"), v["build_seconds"], model_dir(k))
            for k, v in truth["models"].items()]
    print_table(["model", "architecture", "held-out acc", "floor", "build s", "folder"], rows)
    print(f"ground truth: {ground_truth_path()}\n\ndemo corpus:\n{corpus_table()}")
    return 0


def cmd_corpus_table(args) -> int:
    from plugin.demo_corpus import corpus_table

    print(corpus_table())
    return 0


def cmd_serve_hub(args) -> int:
    from crawler.hub_server import run_forever

    run_forever(args.dir, args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="domain-finder", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Find what data undocumented image classifiers were made for "
                                            "(corpus-based domain search, Zhang et al.), logged to MLflow.",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True)

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

    s = sub.add_parser("demo", help="the main job: investigate every demo model on the demo corpus")
    s.add_argument("--recipe", default="demo")
    s.add_argument("--models", nargs="*", default=None, help="subset of demo models")
    s.add_argument("--no-progress", action="store_true")
    add_check_options(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("build-demo", help="build (or show) the cached demo models and corpus table")
    s.add_argument("--force", action="store_true", help="rebuild even if cached")
    s.set_defaults(func=cmd_build_demo)

    s = sub.add_parser("corpus-table", help="print the demo corpus mapping table (Markdown)")
    s.set_defaults(func=cmd_corpus_table)

    from crawler.scan import add_scan_parser
    from crawler.scheduler import add_schedule_parser

    add_scan_parser(sub)
    add_schedule_parser(sub)

    s = sub.add_parser("serve-hub", help="serve a hub-layout folder over the Hugging Face HTTP API")
    s.add_argument("dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(func=cmd_serve_hub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _tracking_default()
    try:
        return args.func(args)
    except DomainFinderError as e:
        print(f"domain-finder: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("domain-finder: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
