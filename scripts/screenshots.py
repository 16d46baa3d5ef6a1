"""``make screenshots``: the README's pictures of the MLflow UI, taken from what ``make demo`` logged.

Starts a real ``mlflow server`` on 127.0.0.1 over the demo's tracking store
(``$MLFLOW_TRACKING_URI``, which the Makefile sets to ``sqlite:///mlflow.db``;
the runs' artifacts stay where the demo wrote them, ``mlruns/``), then Debian's
chromium, headless at 1600x1200, takes from the newest scan run:

- ``mlflow-runs.png``: the runs table in the headline view (the link the scan prints);
- ``mlflow-run.png``: one model's run page (``--model``, default ``demo/upper-body``), upper part;
- ``scan-report.png``: ``scan_report.html`` inline under the scan run's Artifacts;
- ``report.png``: that model's ``report.html`` on its own (1400 px wide).

It prints every headline cell the table cuts with an ellipsis and exits 1
if there is one, so a picture that reads badly is not committed unnoticed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without an install

from plugin import tracking, view  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SIZE = {"width": 1600, "height": 1200}
# Cells of the headline columns whose text is wider than their box (shown with an ellipsis).
CUT_CELLS = """cols => [...document.querySelectorAll('.ag-center-cols-container .ag-cell, .ag-pinned-left-cols-container .ag-cell')]
  .filter(c => cols.includes(c.getAttribute('col-id')))
  .filter(c => [...c.querySelectorAll('*'), c].some(e => e.clientWidth > 0
     && getComputedStyle(e).textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth + 1))
  .map(c => c.getAttribute('col-id') + ': ' + c.innerText.trim())"""


def _runs(base: str, experiment: str, model: str):
    """``(experiment id, newest scan run, the model's child run of it, number of scans)`` from the server."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(base.rstrip("/"))
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"screenshots: no experiment {experiment!r} in {os.environ.get('MLFLOW_TRACKING_URI')}; "
                 "run `make demo` first")
    scans = c.search_runs([exp.experiment_id], f"tags.`{tracking.T_SCAN}` = '1'", order_by=["attributes.start_time DESC"])
    if not scans:
        sys.exit(f"screenshots: no scan run in experiment {experiment!r}; run `make demo` first")
    kids = c.search_runs([exp.experiment_id], f"tags.`{tracking.PARENT_RUN}` = '{scans[0].info.run_id}' "
                         f"and tags.`{tracking.T_MODEL_ID}` = '{model}'")
    if not kids:
        sys.exit(f"screenshots: the newest scan has no run of {model!r}")
    return exp.experiment_id, scans[0], kids[0], len(scans)


def take(base: str, out: Path, experiment: str, model: str) -> list[str]:
    """Takes the four pictures into ``out``; returns the headline cells shown cut."""
    from playwright.sync_api import sync_playwright

    exp, scan_run, run, scans = _runs(base, experiment, model)
    if scans > 1:
        print(f"screenshots: note: {scans} scans in the experiment; the runs table shows all of them")
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=SIZE)
        page.goto(view.view_url(base, exp))
        page.wait_for_selector(".ag-row", timeout=120_000)
        close = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
        if close.count():  # MLflow's "Assistant" beta panel covers a third of the window
            close.click()
        page.wait_for_timeout(1500)
        cut = page.evaluate(CUT_CELLS, [c for c, _ in view.VIEW_COLUMNS if c != "runDateAndNestInfo"])
        page.screenshot(path=str(out / "mlflow-runs.png"))

        page.goto(view.run_url(base, exp, run.info.run_id))
        page.get_by_text(run.info.run_name).first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "mlflow-run.png"))

        page.goto(f"{base}#/experiments/{exp}/runs/{scan_run.info.run_id}/artifacts/scan_report.html?"
                  f"{view.ML_WORKFLOW}")
        page.frame_locator("iframe.mlflow-html-iframe").locator("table").first.wait_for(timeout=120_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "scan-report.png"))

        page.set_viewport_size({"width": 1400, "height": 1300})
        with urllib.request.urlopen(f"{base}get-artifact?path=report.html&run_uuid={run.info.run_id}") as r:
            page.set_content(r.read().decode())  # self-contained (images inline); served as a download
        page.screenshot(path=str(out / "report.png"))
        browser.close()
    return cut


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs", help="folder for the PNGs (default: docs)")
    ap.add_argument("--model", default="demo/upper-body", help="the model whose run page is shown")
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit("screenshots: Debian's chromium is missing (scripts/setup.sh installs it)")
    store = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).exists():
        sys.exit(f"screenshots: no tracking store at {store}; run `make demo` first")
    with tempfile.TemporaryDirectory() as tmp, tracking.mlflow_server(store, Path(tmp) / "server.log") as base:
        cut = take(base, Path(args.out), args.experiment, args.model)
    print(f"screenshots: mlflow-runs.png, mlflow-run.png, scan-report.png, report.png in {args.out}/")
    for cell in cut:
        print(f"screenshots: cut in the runs table: {cell}")
    return 1 if cut else 0


if __name__ == "__main__":
    sys.exit(main())
