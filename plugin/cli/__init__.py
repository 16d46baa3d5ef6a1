"""``domain-finder``: the command line, one module per command group.

Each subcommand is a thin shell over importable functions; errors of our own
hierarchy print one clear line and exit 2 instead of a traceback.
"""
from __future__ import annotations

import argparse
import sys

from plugin.cli import demo, hub, investigate, scan
from plugin.core.errors import DomainFinderError
from plugin.core.settings import tracking_uri_default

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="domain-finder", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Find what data undocumented image classifiers were made for "
                                            "(corpus-based domain search, Zhang et al.), logged to MLflow.",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True)
    investigate.add_parser(sub)
    demo.add_parsers(sub)
    scan.add_parsers(sub)
    hub.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tracking_uri_default()
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
