"""Scan throughput: models per hour on one hub, local backend against Ray at 1, 2 and 4 models at once.

Each configuration scans the same hub into a fresh tracking store of its own
(so nothing is already audited), one after another in one process, and
counts the models it investigated. The last column says whether each
configuration gave every listed model the same outcome as the local backend. The local backend is the baseline: one
model at a time, the scan process fetching and checking it. The Ray rows run
a local Ray instance; how many models run at once is set by
``--cpus-per-model`` against the CPUs Ray finds (``CPUs / n`` each).

    python benchmarks/scan_throughput.py [--source demo] [--recipe demo] [--limit 8] [--at 1 2 4]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from crawler.scan import scan
from plugin import tracking
from plugin.outcomes import INVESTIGATE


def measure(source: str, recipe: str, limit: int | None, backend: str, at_once: int | None) -> tuple[int, float, dict]:
    """``(models investigated, seconds, outcomes)`` of one scan into a fresh store."""
    with tempfile.TemporaryDirectory() as tmp:
        tracking.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        extra = {}
        if backend == "ray":
            extra["cpus_per_model"] = (os.cpu_count() or 1) / at_once
        t0 = time.perf_counter()
        report = scan(source, recipe=recipe, backend=backend, limit=limit, experiment="throughput", **extra)
        seconds = time.perf_counter() - t0
    outcomes = report.outcomes()
    return sum(o == INVESTIGATE for o in outcomes.values()), seconds, outcomes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="demo")
    p.add_argument("--recipe", default="demo")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--at", type=int, nargs="+", default=[1, 2, 4], help="models at once on Ray")
    args = p.parse_args()
    rows = [("local", 1, *measure(args.source, args.recipe, args.limit, "local", None))]
    for n in args.at:
        rows.append(("ray", n, *measure(args.source, args.recipe, args.limit, "ray", n)))
    base = rows[0][2] / rows[0][3]
    print(f"{os.cpu_count()} CPUs; source {args.source}, recipe {args.recipe}\n")
    print("| backend | models at once | investigated | seconds | models/hour | vs local | same outcomes |")
    print("|---|---|---|---|---|---|---|")
    for backend, n, models, seconds, outcomes in rows:
        rate = models / seconds
        print(f"| {backend} | {n} | {models} | {seconds:.0f} | {rate * 3600:.0f} | {rate / base:.2f}x | "
              f"{'yes' if outcomes == rows[0][4] else 'no'} |")
    for backend, n, _, _, outcomes in rows[1:]:
        for repo in sorted(set(outcomes) | set(rows[0][4])):
            if outcomes.get(repo) != rows[0][4].get(repo):
                print(f"{backend} x{n}: {repo}: {outcomes.get(repo)} (local: {rows[0][4].get(repo)})")


if __name__ == "__main__":
    main()
