"""What several commands share: model resolution, check and MLflow options, tables, validation."""
from __future__ import annotations

import argparse
from pathlib import Path

from plugin.checks import available_checks
from plugin.core.errors import ConfigError, DomainFinderError
from plugin.demo.models import ALL_DEMO_MODELS, build_demo_models, model_dir
from plugin.tracking import DEFAULT_EXPERIMENT


def resolve_model(spec: str, progress: bool = True) -> Path:
    """A folder path, or the name of a demo model (built on first use)."""
    p = Path(spec)
    if p.is_dir():
        return p
    if spec in ALL_DEMO_MODELS:
        build_demo_models(progress=progress)
        return model_dir(spec)
    raise DomainFinderError(f"model {spec!r} is neither a folder (looked for {p.resolve()}) nor a demo model "
                            f"({', '.join(ALL_DEMO_MODELS)})")


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


def add_run_options(s: argparse.ArgumentParser) -> None:
    """``--experiment`` and ``--no-progress``, shared by every command that logs runs."""
    s.add_argument("--experiment", default=None,
                   help=f"MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else {DEFAULT_EXPERIMENT!r})")
    s.add_argument("--no-progress", action="store_true", help="no progress bars or per-model lines")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def existing_dir(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{what} {path}: no such folder")
    return p


def print_table(header: list[str], rows: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
