"""The HTML reports: self-contained, complete, and rendered by real headless Debian chromium with no console errors."""
from __future__ import annotations

import re

import numpy as np
import pytest

from plugin.core.blackbox import CountingBlackBox
from plugin.core.corpus import Corpus, Leaf
from plugin.core.hierarchy import Hierarchy
from plugin.core.recipe import Recipe
from plugin.core.search import search
from plugin.core.verdict import conclude
from crawler.scan.view import scan_page
from plugin.report import investigation_html, shorten
from render_html import render

class LeafOracle(CountingBlackBox):
    """An exact black box: the label is a function of the leaf id painted into the image."""

    def __init__(self, mapping: dict[int, int], num_classes: int):
        super().__init__(num_classes=num_classes)
        self.mapping = mapping

    def _predict(self, images):
        return np.array([self.mapping.get(int(np.median(im[:, :, 0])), 0) for im in images])


@pytest.fixture
def concluded():
    leaves = ["n02690373", "n04552348", "n02123045", "n02123394", "n04133789"]
    h = Hierarchy.from_wordnet(leaves)
    corpus = Corpus("small", [Leaf(s, h.name(s), [np.full((16, 16, 3), k, np.uint8) for _ in range(30)])
                              for k, s in enumerate(leaves)], h)
    recipe = Recipe(images_per_leaf=30, transforms_per_image=1, noise=0, rotate=0, translate=0, perspective=0,
                    coherence=0, min_samples=5)
    res = search(LeafOracle({0: 0, 1: 0, 2: 1, 3: 1, 4: 2}, 3), corpus, recipe, model="oracle")
    res.findings = conclude(res.findings, corpus, recipe)
    return res, corpus


def test_investigation_report_renders_without_console_errors(concluded, tmp_path):
    res, corpus = concluded
    f = res.findings
    html = investigation_html(f, corpus, res.classes, [("dataset_index", "no known dataset order")])
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    page = tmp_path / "report.html"
    page.write_text(html)
    dom, console = render(page)
    assert console == []
    assert f.verdict.answer in dom and f"confidence {f.verdict.confidence:.2f}" in dom
    assert dom.count('alt="sample"') == sum(min(8, len(c.samples)) for c in res.classes)  # found-sample thumbnails
    for name in ("airliner", "tabby", "sandal", "dataset_index", "Provenance"):
        assert name in dom
    shot = tmp_path / "report.png"
    render(page, shot)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[1] == 1400 and pixels.std() > 5  # something was drawn, not a blank page


def test_scan_report_lists_refused_and_failed_first_with_links(tmp_path):
    rows = [dict(repo="a/ok", sha="1" * 40, outcome="investigate", domain="footwear", verdict="one-domain",
                 confidence="0.80", run_id="r1"),
            dict(repo="b/unsafe", sha="2" * 40, outcome="refused-unsafe", reason="UnsafeCheckpointError: pickle",
                 run_id="r2"),
            dict(repo="c/doc", sha="3" * 40, outcome="skipped-documented", reason="documented"),
            dict(repo="d/bad", sha="4" * 40, outcome="failed-corrupt", reason="truncated", run_id="r4")]
    page = tmp_path / "scan.html"
    page.write_text(scan_page("demo", rows, run_id="p1", experiment_id="7", seconds=3, ui_base="http://h:5000/"))
    dom, console = render(page)
    assert console == []
    order = [m for m in re.findall(r"[abcd]/(?:ok|unsafe|doc|bad)", dom)]
    assert order.index("b/unsafe") < order.index("a/ok") and order.index("d/bad") < order.index("a/ok")
    assert "http://h:5000/#/experiments/7/runs/r2" in dom and "http://h:5000/#/experiments/7/runs/r1" in dom


def test_shorten_never_cuts_mid_word():
    text = "UnsafeCheckpointError: pytorch_model.bin imports os.system; refused before loading anything"
    first = text.split(" ")[0].rstrip(",;:")
    for n in range(1, len(text) + 2):
        out = shorten(text, n)
        kept = out.rstrip("\u2026")
        assert text.startswith(kept) and (len(kept) == len(text) or text[len(kept)] in " ,;:"), (n, out)
        assert len(out) <= n or kept == first  # only an over-long first word exceeds the limit
