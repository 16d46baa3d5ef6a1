"""Scanning a model source: options, ledger, report, backends and the orchestration."""
from __future__ import annotations

from crawler.scan.ledger import find_audit, reap_stale_runs
from crawler.scan.options import DEFAULT_MAX_BYTES, ScanOptions
from crawler.scan.orchestrate import run_scan, scan
from crawler.scan.report import ScanReport, ScanRow
from plugin.outcomes import ALREADY_AUDITED, FAILED

__all__ = ["ALREADY_AUDITED", "DEFAULT_MAX_BYTES", "FAILED", "ScanOptions", "ScanReport", "ScanRow", "find_audit",
           "reap_stale_runs", "run_scan", "scan"]
