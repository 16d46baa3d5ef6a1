"""A scan's summary: one row per model listed, as Markdown, CSV and a self-contained HTML page."""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

from crawler.scan.view import scan_description, scan_page

SUMMARY_COLUMNS = ("repo", "sha", "outcome", "domain", "verdict", "confidence", "stability", "flags", "classes_found",
                   "queries", "seconds", "reason")


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
    verdict: str = ""
    confidence: str = ""
    flags: str = ""  # "decoy-suspected[0,1,2],sink-class[2]": what the investigator must be warned about
    stability: str = ""  # the run's `stability` metric: mean share of bootstrap resamples returning each answer

    def cells(self) -> list[str]:
        return [self.repo, self.sha[:8], self.outcome, self.domain, self.verdict, self.confidence, self.stability,
                self.flags, self.classes_found, self.queries, f"{self.seconds:.1f}", self.reason]


@dataclass
class ScanReport:
    source: str
    run_id: str
    rows: list[ScanRow] = field(default_factory=list)
    seconds: float = 0.0
    experiment_id: str = ""
    formats: dict[str, int] = field(default_factory=dict)  # listed models per detected format

    def outcomes(self) -> dict[str, str]:
        return {r.repo: r.outcome for r in self.rows}

    def table(self) -> str:
        per_format = ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items()))
        return markdown_table(self.rows) + (f"\nRows per format: {per_format}\n" if per_format else "")

    def html(self, ui_base: str = "") -> str:
        """The scan's HTML report: refused and failed models first, each linked to its run."""
        return scan_page(self.source, [asdict(r) for r in self.rows], run_id=self.run_id,
                         experiment_id=self.experiment_id, seconds=self.seconds, ui_base=ui_base)

    def description(self) -> str:
        """The parent run's Markdown description, every model linked to its run."""
        return scan_description(self.source, [asdict(r) for r in self.rows], experiment_id=self.experiment_id,
                                seconds=self.seconds)


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
