"""Rendering helper for the tests: real headless Debian chromium (installed by scripts/setup.sh)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium")


def render(page: Path, screenshot: Path | None = None, size: str = "1400,1100",
           budget_ms: int | None = None) -> tuple[str, list[str]]:
    """The DOM chromium built from ``page`` (a file or URL) and the console lines it logged."""
    assert CHROMIUM, "Debian's chromium is missing: scripts/setup.sh installs it"
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--hide-scrollbars", f"--window-size={size}"]
    if budget_ms:
        args.append(f"--virtual-time-budget={budget_ms}")
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    url = page if isinstance(page, str) else Path(page).resolve().as_uri()
    proc = subprocess.run([*args, url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [l for l in proc.stderr.splitlines() if ":CONSOLE" in l]
