"""``domain-finder demo``, ``build-demo`` and ``corpus-table``: the embedded demo."""
from __future__ import annotations

import os
import time

from plugin import tracking
from plugin.cli.common import add_check_options, add_run_options, check_args, print_table
from plugin.core.errors import ConfigError
from plugin.core.flags import flag_summary
from plugin.core.recipe import Recipe
from plugin.demo.corpus import corpus_table, load_demo_corpus
from plugin.demo.models import ALL_DEMO_MODELS, build_demo_models, ground_truth_path, model_dir
from plugin.investigate import identity_of, investigate, plan_investigation
from plugin.report import shorten


def cmd_demo(args) -> int:
    """The main job on the embedded demo: every demo model, one run each."""
    t0 = time.time()
    recipe = Recipe.load(args.recipe)
    unknown = [m for m in (args.models or []) if m not in ALL_DEMO_MODELS]
    if unknown:
        raise ConfigError(f"unknown demo models {unknown}; valid: {', '.join(ALL_DEMO_MODELS)}")
    checks, options = check_args(args)
    progress = not args.no_progress
    corpus = load_demo_corpus()
    plan = plan_investigation(corpus, recipe, checks, options, progress=progress)  # before any work
    truth = build_demo_models(progress=progress)
    rows = []
    for name in args.models or ALL_DEMO_MODELS:
        with tracking.experiment(args.experiment):
            inv = investigate(model_dir(name), corpus, recipe, identity=identity_of(model_dir(name), model_id=name),
                              run_name=name, progress=progress, plan=plan, recipe_name=args.recipe)
        f = inv.result.findings
        rows.append((name, f"{f.verdict.classes_found}/{f.num_classes}", shorten(f.verdict.answer, 90),
                     f"{f.verdict.confidence:.2f}", flag_summary(f.flags) or "-", f.queries, f"{inv.seconds:.0f}s"))
    print_table(["model", "classes found", "answer", "confidence", "flags", "queries", "time"], rows)
    print("\nheld-out accuracies of the demo models (ground truth, never shown to the search): "
          + ", ".join(f"{k} {v['heldout_accuracy']}" for k, v in truth["models"].items() if v["heldout_accuracy"] is not None))
    print(f"total {time.time() - t0:.0f} s. Open the runs with:\n  mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']}")
    return 0


def cmd_build_demo(args) -> int:
    truth = build_demo_models(force=args.force)
    rows = [(k, v["architecture"], v["heldout_accuracy"], v.get("accuracy_floor", "-"), v["build_seconds"], model_dir(k))
            for k, v in truth["models"].items()]
    print_table(["model", "architecture", "held-out acc", "floor", "build s", "folder"], rows)
    print(f"ground truth: {ground_truth_path()}\n\ndemo corpus:\n{corpus_table()}")
    return 0


def cmd_corpus_table(args) -> int:
    print(corpus_table())
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("demo", help="investigate every demo model on the demo corpus, directly (no hub)")
    s.add_argument("--recipe", default="demo")
    s.add_argument("--models", nargs="*", default=None, help="subset of demo models")
    add_run_options(s)
    add_check_options(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("build-demo", help="build (or show) the cached demo models and corpus table")
    s.add_argument("--force", action="store_true", help="rebuild even if cached")
    s.set_defaults(func=cmd_build_demo)

    s = sub.add_parser("corpus-table", help="print the demo corpus mapping table (Markdown)")
    s.set_defaults(func=cmd_corpus_table)
