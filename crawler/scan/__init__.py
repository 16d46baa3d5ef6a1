"""Scanning a model source: options, ledger, report, backends and the orchestration."""
from __future__ import annotations

from crawler.scan.ledger import classify_error, find_audit, reap_stale_runs
from crawler.scan.options import DEFAULT_MAX_BYTES, ScanOptions
from crawler.scan.orchestrate import run_scan, scan
from crawler.scan.report import ScanReport, ScanRow
from plugin.tracking import ALREADY_AUDITED, FAILED, SUBMITTED

__all__ = ["ALREADY_AUDITED", "DEFAULT_MAX_BYTES", "FAILED", "SUBMITTED", "ScanOptions", "ScanReport", "ScanRow",
           "classify_error", "find_audit", "reap_stale_runs", "run_scan", "scan"]
