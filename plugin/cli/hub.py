"""``domain-finder serve-hub``: serve a hub-layout folder over the Hugging Face HTTP API."""
from __future__ import annotations

from plugin.cli.common import existing_dir


def cmd_serve_hub(args) -> int:
    from crawler.hub.server import run_forever

    folder = existing_dir(args.dir, "serve-hub")
    run_forever(folder, args.host, args.port)
    return 0


def _port(text: str) -> int:
    import argparse

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def add_parser(sub) -> None:
    s = sub.add_parser("serve-hub", help="serve a hub-layout folder over the Hugging Face HTTP API")
    s.add_argument("dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_port, default=8080)
    s.set_defaults(func=cmd_serve_hub)
