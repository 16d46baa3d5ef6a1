"""``domain-finder serve-hub``: serve a hub-layout folder over the Hugging Face HTTP API."""
from __future__ import annotations

from crawler.hub_server import run_forever


def cmd_serve_hub(args) -> int:
    run_forever(args.dir, args.host, args.port)
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("serve-hub", help="serve a hub-layout folder over the Hugging Face HTTP API")
    s.add_argument("dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(func=cmd_serve_hub)
