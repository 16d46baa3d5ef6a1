"""``domain-finder scan`` and ``schedule``: audit a hub, once or every night."""
from __future__ import annotations

import argparse
import logging
import os

from crawler.scan import DEFAULT_MAX_BYTES, scan
from crawler.scheduler import Nightly


def add_scan_options(s: argparse.ArgumentParser) -> None:
    """The options shared by ``scan`` and ``schedule``."""
    s.add_argument("--source", required=True,
                   help="where to list models: demo, demo:PATH, dir:PATH (hub-layout folder), hf or hf:ENDPOINT")
    s.add_argument("--endpoint", default=None, help="Hub URL for --source hf (default: huggingface.co)")
    s.add_argument("--author", default=None, help="only models of this owner")
    s.add_argument("--search", default=None, help="only models whose name contains this")
    s.add_argument("--limit", type=int, default=None, help="list at most this many models")
    s.add_argument("--corpus", default="demo", help="corpus name or ImageNet-layout folder (default: demo)")
    s.add_argument("--recipe", default="demo", help="recipe YAML or a name in recipes/ (default: demo)")
    s.add_argument("--include-documented", action="store_true",
                   help="also investigate models whose card already says what data they were made for")
    s.add_argument("--timeout", type=float, default=900, help="kill one model's investigation after this many "
                                                              "seconds; its run ends FAILED (default: 900)")
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="refuse weights files larger than this many bytes (default: 2 GiB)")
    s.add_argument("--backend", choices=("local", "kubernetes"), default="local",
                   help="local: one isolated worker process per model; kubernetes: submit each model as an "
                        "MLflow Project run (needs --backend-config)")
    s.add_argument("--backend-config", default=None, help="kubernetes backend config JSON for mlflow run")
    s.add_argument("--work-dir", default=None,
                   help="kubernetes only: keep fetched models here (a volume the cluster can read)")
    s.add_argument("--no-progress", action="store_true", help="do not print one line per model")


def scan_kwargs(args) -> dict:
    opts = {k: getattr(args, k) for k in ("author", "search") if getattr(args, k, None)}
    spec = args.source
    if args.endpoint and spec == "hf":
        spec = f"hf:{args.endpoint}"
    return dict(source_spec=spec, corpus=args.corpus, recipe=args.recipe,
                include_documented=args.include_documented, max_bytes=args.max_bytes, timeout_s=args.timeout,
                backend=args.backend, backend_config=args.backend_config, progress=not args.no_progress,
                limit=args.limit, source_options=opts, work_dir=args.work_dir)


def cmd_scan(args) -> int:
    report = scan(**scan_kwargs(args))
    print(f"scan run {report.run_id}: {len(report.rows)} models in {report.seconds:.0f} s")
    print(f"open the runs with:\n  mlflow ui --backend-store-uri {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite:///mlflow.db')}")
    return 0


def add_scan_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``domain-finder scan`` to ``subparsers`` (sets ``func``)."""
    s = subparsers.add_parser(
        "scan", help="scan a model source; investigate each undocumented classifier once per revision",
        description="List models from a source, skip encoders and documented models, and investigate the rest "
                    "(one MLflow child run each under one scan run). Revisions already audited in the "
                    "tracking store are skipped, so rerunning a scan only does new work.")
    add_scan_options(s)
    s.set_defaults(func=cmd_scan)
    return s


def cmd_schedule(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    kwargs = scan_kwargs(args)
    nightly = Nightly(at=args.at, job=lambda: scan(**kwargs))
    nightly.run_forever(poll_s=args.poll)
    return 0


def add_schedule_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``domain-finder schedule`` to ``subparsers`` (sets ``func``)."""
    s = subparsers.add_parser(
        "schedule", help="run a scan every night at a fixed time (no overlap; stops cleanly on Ctrl-C/SIGTERM)",
        description="Runs `domain-finder scan` with the given options every day at --at (local time). A trigger "
                    "that fires while the previous scan still runs is skipped and logged.")
    s.add_argument("--at", default="02:00", help="time of day, HH:MM (default: 02:00)")
    s.add_argument("--poll", type=float, default=30.0, help="seconds between schedule checks (default: 30)")
    add_scan_options(s)
    s.set_defaults(func=cmd_schedule)
    return s


def add_parsers(sub) -> None:
    add_scan_parser(sub)
    add_schedule_parser(sub)
