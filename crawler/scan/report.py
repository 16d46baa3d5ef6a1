"""A scan's summary: one row per model listed, as Markdown and CSV."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

SUMMARY_COLUMNS = ("repo", "sha", "outcome", "domain", "classes_found", "queries", "seconds", "reason")


@dataclass
class ScanRow:
    repo: str
    sha: str
    outcome: str
    domain: str = ""
    classes_found: str = ""
    queries: str = ""
    seconds: float = 0.0
    reason: str = ""
    run_id: str = ""

    def cells(self) -> list[str]:
        return [self.repo, self.sha[:8], self.outcome, self.domain, self.classes_found, self.queries,
                f"{self.seconds:.1f}", self.reason]


@dataclass
class ScanReport:
    source: str
    run_id: str
    rows: list[ScanRow] = field(default_factory=list)
    seconds: float = 0.0

    def outcomes(self) -> dict[str, str]:
        return {r.repo: r.outcome for r in self.rows}

    def table(self) -> str:
        return markdown_table(self.rows)


def markdown_table(rows: list[ScanRow]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_csv(rows: list[ScanRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SUMMARY_COLUMNS)
    for r in rows:
        w.writerow(r.cells())
    return buf.getvalue()
