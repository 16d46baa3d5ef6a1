"""``domain-finder``: the command line, one module per command group.

Each subcommand is a thin shell over importable functions. Bad input is
refused before the first query with one line on stderr: usage errors and our
own errors exit 2, an unreachable hub exits 3 (:data:`EXIT_HUB`), anything
unexpected exits 1, still in one line (``--traceback`` shows the rest).
"""
from __future__ import annotations

import argparse
import sys

from plugin.cli import demo, generative, hub, investigate, scan
from plugin.core.errors import DomainFinderError, HubError
from plugin.core.settings import io_threads, tracking_uri_default

EXIT_USAGE = 2
EXIT_HUB = 3
EPILOG = """examples:
  domain-finder scan --source demo                    scan the demo hub (the main job)
  domain-finder scan --source hf --author someone     scan the real Hub (HF_ENDPOINT or --endpoint)
  domain-finder schedule --at 02:00 --source hf       rescan every night
  domain-finder demo                                  investigate every demo model directly
  domain-finder investigate footwear --corpus demo    a demo model by name
  domain-finder investigate ./my-model --corpus /data/imagenet/val --recipe recipes/default.yaml --json out.json
  domain-finder build-demo                            build the ground-truth demo models
  domain-finder serve-hub ./mirror --port 8080        serve a hub-layout folder over the HF HTTP API

exit codes: 0 done, 2 bad input (nothing run, no query spent), 3 hub unreachable, 1 unexpected error.

MLflow: runs go to $MLFLOW_TRACKING_URI (default sqlite:///mlflow.db), experiment "domain-finder"
(--experiment); open them with
  mlflow ui --backend-store-uri sqlite:///mlflow.db
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with usage errors in one line (``--help`` still shows the usage)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="domain-finder", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Find what data undocumented image classifiers were made for "
                                            "(corpus-based domain search, Zhang et al.), logged to MLflow.",
                                epilog=EPILOG)
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True)
    investigate.add_parser(sub)
    demo.add_parsers(sub)
    scan.add_parsers(sub)
    hub.add_parser(sub)
    generative.add_parser(sub)
    return p


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tracking_uri_default()
    try:
        io_threads()  # a bad DOMAIN_FINDER_THREADS is refused here, before any work
        return args.func(args)
    except HubError as e:
        print(f"domain-finder: hub unreachable: {_one_line(e)}", file=sys.stderr)
        return EXIT_HUB
    except DomainFinderError as e:
        print(f"domain-finder: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("domain-finder: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for people; --traceback for the rest
        if args.traceback:
            raise
        print(f"domain-finder: unexpected error: {type(e).__name__}: {_one_line(e)} (rerun with --traceback "
              "for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
