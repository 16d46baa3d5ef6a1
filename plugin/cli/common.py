"""What several commands share: model resolution, check options, tables."""
from __future__ import annotations

import argparse
from pathlib import Path

from plugin.checks import available_checks
from plugin.core.errors import DomainFinderError
from plugin.demo.models import ALL_DEMO_MODELS, build_demo_models, model_dir


def resolve_model(spec: str) -> Path:
    """A folder path, or the name of a demo model (built on first use)."""
    p = Path(spec)
    if p.is_dir():
        return p
    if spec in ALL_DEMO_MODELS:
        build_demo_models()
        return model_dir(spec)
    raise DomainFinderError(f"model {spec!r} is neither a folder nor a demo model ({', '.join(ALL_DEMO_MODELS)})")


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
                   help=f"also run this follow-up check (repeatable): {', '.join(available_checks())}")
    s.add_argument("--aux", action="append", metavar="[LOADER:]NAME=PATH",
                   help="score a flat auxiliary corpus (repeatable): flavia=DIR, flowers102=DIR, any ImageFolder, "
                        "or a built-in demo-fashion / demo-digits-faces")


def print_table(header: list[str], rows: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
