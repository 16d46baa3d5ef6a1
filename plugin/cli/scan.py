"""``domain-finder scan`` and ``schedule``: audit a hub, once or every night."""
from __future__ import annotations

import argparse
import logging
import os

from crawler.scan import DEFAULT_MAX_BYTES, scan
from crawler.scan.options import BACKENDS, DEFAULT_WORKER_MEMORY, RETRY_CHOICES, ScanOptions
from crawler.scan.orchestrate import LISTING_ROW
from plugin.core.errors import HubError
from plugin import tracking
from plugin.outcomes import CATEGORIES
from plugin.view import ui_base, view_url

EXIT_SOME_FAILED = 4  # the scan ran to the end, but some repos (or the listing) failed
from crawler.scheduler import Nightly


def add_scan_options(s: argparse.ArgumentParser) -> None:
    """The options shared by ``scan`` and ``schedule``."""
    s.add_argument("--source", required=True,
                   help="where to list models: demo, demo:PATH, dir:PATH (hub-layout folder), hf or hf:ENDPOINT")
    s.add_argument("--endpoint", default=None, help="Hub URL for --source hf (default: huggingface.co)")
    s.add_argument("--author", default=None, help="only models of this owner")
    s.add_argument("--search", default=None, help="only models whose name contains this")
    s.add_argument("--limit", type=int, default=None, help="list at most this many models")
    s.add_argument("--library", type=parse_libraries, default=None, metavar="LIB[,LIB...]",
                   help="list only these libraries' image classifiers, e.g. timm,transformers,onnx "
                        "(default: every library; the listing asks for pipeline_tag=image-classification)")
    s.add_argument("--corpus", default="demo", help="corpus name or ImageNet-layout folder (default: demo)")
    s.add_argument("--recipe", default="demo", help="recipe YAML or a name in recipes/ (default: demo)")
    s.add_argument("--include-documented", action="store_true",
                   help="also investigate models whose card already says what data they were made for")
    s.add_argument("--timeout", type=float, default=900, help="kill one model's investigation after this many "
                                                              "seconds; its run ends FAILED (default: 900)")
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="refuse weights files larger than this many bytes (default: 2 GiB)")
    s.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: one model at a time, each in an isolated worker process; ray: one Ray task per "
                        "model, as many at once as the Ray cluster has room for (pip install .[ray])")
    s.add_argument("--ray-address", default=None,
                   help="ray: the cluster to join, host:port or ray://host:port (default: $RAY_ADDRESS, else a "
                        "local Ray instance using every core and GPU here); needs a tracking server "
                        "(MLFLOW_TRACKING_URI=http://...) that every node reaches")
    s.add_argument("--gpus-per-model", type=float, default=0.0,
                   help="ray: GPUs one model's task asks for; a fraction shares a GPU (0.25: four at once)")
    s.add_argument("--cpus-per-model", type=float, default=1.0, help="ray: CPUs one model's task asks for (default: 1)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar or per-model lines")
    s.add_argument("--retry-failed", nargs="?", const="all", default=None, choices=RETRY_CHOICES, metavar="CATEGORY",
                   help="retry failed repos now, even settled or backing-off ones: all of them, or one category ("
                        + ", ".join(RETRY_CHOICES[1:]) + ")")
    s.add_argument("--worker-memory", type=int, default=DEFAULT_WORKER_MEMORY,
                   help="address-space limit of each investigation worker, bytes (default: 16 GiB)")
    s.add_argument("--worker-cpu", type=float, default=None,
                   help="CPU-time limit of each worker, seconds (default: --timeout x CPU count)")
    s.add_argument("--ui-url", default="", help="the MLflow UI's address (http://host:port/), for links in "
                   "scan_report.html; default: the tracking URI when it is http(s), else links by run id")
    s.add_argument("--experiment", default=None,
                   help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else 'domain-finder')")


def scan_kwargs(args) -> dict:
    opts = {k: getattr(args, k) for k in ("author", "search", "library") if getattr(args, k, None)}
    spec = args.source
    if args.endpoint and spec == "hf":
        spec = f"hf:{args.endpoint}"
    return dict(source_spec=spec, corpus=args.corpus, recipe=args.recipe,
                include_documented=args.include_documented, max_bytes=args.max_bytes, timeout_s=args.timeout,
                backend=args.backend, ray_address=args.ray_address, gpus_per_model=args.gpus_per_model,
                cpus_per_model=args.cpus_per_model, progress=not args.no_progress, limit=args.limit,
                source_options=opts,
                retry_failed=getattr(args, "retry_failed", None),
                worker_memory=getattr(args, "worker_memory", DEFAULT_WORKER_MEMORY),
                worker_cpu_s=getattr(args, "worker_cpu", None), ui_url=getattr(args, "ui_url", "") or "")


def _validated(args) -> dict:
    """Scan options checked before any listing, run or query (one-line errors, exit 2)."""
    from plugin.investigate import plan_investigation
    from plugin.core.recipe import Recipe

    kwargs = scan_kwargs(args)
    plan_investigation(args.corpus, Recipe.load(args.recipe))  # recipe types, checks, aux folders, corpus
    opts = ScanOptions.build(**{k: v for k, v in kwargs.items() if k != "source_spec"})  # the options' own checks
    if opts.backend == "ray":
        from crawler.scan.ray_backend import check_address

        check_address(opts)  # before the experiment is even set
    return kwargs


def parse_libraries(text: str) -> list[str]:
    """An argparse type for ``--library``: comma-separated library names as the Hub spells them."""
    import re

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,39}", n)]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected library names such as timm,transformers,onnx, got {text!r}")
    return list(dict.fromkeys(names))


def parse_at(text: str) -> str:
    """An argparse type for ``--at``: ``HH:MM`` on a 24-hour clock."""
    import re

    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise argparse.ArgumentTypeError(f"expected a time of day HH:MM (00:00-23:59), got {text!r}")
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def cmd_scan(args) -> int:
    kwargs = _validated(args)
    with tracking.experiment(args.experiment):
        report = scan(**kwargs)
    print(report.table(), end="")
    print(f"scan run {report.run_id}: {len(report.rows)} models in {report.seconds:.0f} s")
    print(f"open the runs with:\n  mlflow ui --backend-store-uri {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite:///mlflow.db')}")
    base = ui_base(tracking.tracking_uri(), args.ui_url) or "http://127.0.0.1:5000/"  # mlflow ui's default address
    print(f"then the headline view: {view_url(base, report.experiment_id)}")
    if report.rows and all(r.repo == LISTING_ROW for r in report.rows):
        # Nothing could be listed at all: the hub is unreachable, which has its own exit code.
        raise HubError(f"{args.source}: nothing listed; {report.rows[0].reason}")
    failed = [r for r in report.rows if r.outcome in CATEGORIES]
    if failed:
        print(f"{len(failed)} repos failed this scan (FAILED runs with a category); exit {EXIT_SOME_FAILED}")
        return EXIT_SOME_FAILED
    return 0


def add_scan_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``domain-finder scan`` to ``subparsers`` (sets ``func``)."""
    s = subparsers.add_parser(
        "scan", help="scan a model source; investigate each undocumented classifier once per revision",
        description="List models from a source, skip encoders and documented models, and investigate the rest "
                    "(one MLflow child run each under one scan run). Revisions already audited in the "
                    "tracking store are skipped, so rerunning a scan only does new work.",
        epilog="exit codes: 0 every repo ended well (investigated, skipped or already audited); 4 the scan ran to "
               "the end but some repos failed (each has a FAILED run with a category: refused-unsafe, invalid-repo, "
               "failed-corrupt, failed-unsupported, hub-error, timeout, resource-limit, crash) or the listing "
               "stopped early; 2 bad input; 3 hub unreachable; 1 unexpected error.")
    add_scan_options(s)
    s.set_defaults(func=cmd_scan)
    return s


def cmd_schedule(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    kwargs = _validated(args)
    nightly = Nightly(at=args.at, job=lambda: print(scan(**kwargs).table(), end=""))
    with tracking.experiment(args.experiment):
        nightly.run_forever(poll_s=args.poll)
    return 0


def add_schedule_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``domain-finder schedule`` to ``subparsers`` (sets ``func``)."""
    s = subparsers.add_parser(
        "schedule", help="run a scan every night at a fixed time (no overlap; stops cleanly on Ctrl-C/SIGTERM)",
        description="Runs `domain-finder scan` with the given options every day at --at (local time). A trigger "
                    "that fires while the previous scan still runs is skipped and logged.")
    s.add_argument("--at", default="02:00", type=parse_at, help="time of day, HH:MM (default: 02:00)")
    s.add_argument("--poll", type=float, default=30.0, help="seconds between schedule checks (default: 30)")
    add_scan_options(s)
    s.set_defaults(func=cmd_schedule)
    return s


def add_parsers(sub) -> None:
    add_scan_parser(sub)
    add_schedule_parser(sub)
