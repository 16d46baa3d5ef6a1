"""The investigator's view without a browser: headline names, rounding, links, the scan page, the contradiction flag."""
from __future__ import annotations

import json

import pytest

from crawler.scan.report import ScanReport, ScanRow
from crawler.scan.view import downloaded_hashes, scan_description
from plugin import view
from plugin.core.contradiction import INDEX, index_contradiction_flag
from plugin.core.findings import ClassFinding, LeafScore, Node


def test_run_name_is_the_headline_and_fits_the_name_column():
    assert view.run_name("demo/upper-body", outcome="investigate", domain="garment",
                         confidence=0.4213) == "upper-body \u00b7 garment \u00b7 0.42"
    refused = view.run_name("someone/model", outcome="refused-unsafe")
    assert refused == "REFUSED-UNSAFE \u00b7 model"
    long = view.run_name("o/" + "x" * 60, outcome="investigate", domain="a very long domain name indeed",
                         confidence=0.5)
    assert len(long) <= view.NAME_CHARS and long.endswith("\u00b7 0.50") and "\u2026" in long
    several = view.run_name("o/fashion10", outcome="investigate", domain="garment \u00d79, bag \u00d71, shoe \u00d71",
                            confidence=0.1)
    assert len(several) <= view.NAME_CHARS and several.startswith("fashion10 \u00b7 garment")


def test_sig3_and_short_values():
    assert view.sig3(0.125761) == 0.126 and view.sig3(0.0008411548) == 0.000841 and view.sig3(652.4) == 652.0
    assert view.sig3(0) == 0 and view.rounded({"a": 1 / 3}) == {"a": 0.333}
    assert view.sig3(1917) == 1917 and view.sig3(4023.4) == 4023  # a count stays exact, seconds to the second
    assert view.short("digit \u00d72, garment \u00d71, face \u00d71", 20) == "digit \u00d72\u2026"
    assert view.short("refused-unsafe") == "refused-unsafe"


def test_links_are_absolute_when_the_ui_is_known():
    assert view.ui_base("http://127.0.0.1:5000") == "http://127.0.0.1:5000/"
    assert view.ui_base("sqlite:///m.db", "https://mlflow.example.org/ml/") == "https://mlflow.example.org/ml/"
    assert view.ui_base("sqlite:///m.db") == ""
    with pytest.raises(ValueError):
        view.ui_base("", "ftp://x")
    assert view.run_url("http://h:1/", "3", "abc") == "http://h:1/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert view.run_url("", "3", "abc") == ""
    state = json.loads(view.view_state())
    assert state["orderByKey"] == "metrics.`confidence`" and state["orderByAsc"] is True
    assert {"tags.`outcome`", "tags.`domain`", "tags.`verdict`", "metrics.`confidence`", "tags.`flags`"} <= set(
        state["selectedColumns"])
    assert set(state["columnWidths"]) == set(state["columnOrder"])  # the UI sizes only the ordered columns


def test_scan_page_puts_refusals_first_loud_and_links_runs():
    rows = [ScanRow("t/good", "a" * 40, "investigate", domain="garment", verdict="one-domain", confidence="0.42",
                    run_id="r1"),
            ScanRow("t/unsafe", "b" * 40, "refused-unsafe", reason="pickle imports exec", run_id="r2"),
            ScanRow("t/doc", "c" * 40, "skipped-documented", reason="undocumented score 0.20")]
    report = ScanReport("demo", "parent", rows, seconds=12.0, experiment_id="7")
    page = report.html("http://h:5000/")
    assert page.index("t/unsafe") < page.index("t/good") and page.index("t/unsafe") < page.index("t/doc")
    assert '<tr class="alarm"><td>refused-unsafe' in page
    assert 'href="http://h:5000/#/experiments/7/runs/r1?workflowType=machine_learning"' in page
    assert 'href="#/' not in page  # no relative link: it would resolve to blob: in MLflow's frame
    bare = report.html("")
    # No address: run ids, no href (opened as a file they stay text); the page's script links them in the UI.
    table = bare.split("<table>")[1].split("</table>")[0]
    assert "<code>r2</code>" in table and "href" not in table and 'data-run="#/experiments/7/runs/r2?' in table
    assert "<script>" not in page and "<script>" in bare and "Ctrl-click" in bare
    md = scan_description("demo", [r.__dict__ for r in rows], experiment_id="7", seconds=12.0)
    assert "**REFUSED-UNSAFE 1**" in md and "[r2](#/experiments/7/runs/r2?workflowType=machine_learning)" in md
    assert md.index("| **REFUSED-UNSAFE** | t/unsafe") < md.index("t/good")


def test_downloaded_hashes(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"abc")
    hashes = downloaded_hashes(tmp_path, "p.")
    assert hashes == {"p.pytorch_model.bin": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


def _cls(i: int, leaf: str, found: bool = True) -> ClassFinding:
    return ClassFinding(i, found, (Node(leaf, leaf),), Node(leaf, leaf), 0.9, 0.9, 0.9, 10,
                        (LeafScore(leaf, leaf, 0.9, 0.8),), confidence=0.5)


def _summary(pairs, identity=False, aligned=None):
    return {"verdict": "Fashion-MNIST classes, permuted", "dataset": "Fashion-MNIST",
            "orders": [{"dataset": "Fashion-MNIST", "identity": identity, "aligned_fraction": aligned,
                        "accuracy_as_dataset": 0.11,
                        "mapping": [{"model_class": i, "dataset_synset": s} for i, s in pairs]}]}


def test_index_contradiction_flag():
    classes = [_cls(0, "shirt"), _cls(1, "sandal"), _cls(2, "bag")]
    agree = _summary([(0, "shirt"), (1, "sandal"), (2, "bag")])
    assert index_contradiction_flag(agree, classes) is None
    against = _summary([(0, "trouser"), (1, "coat"), (2, "bag")])
    flag = index_contradiction_flag(against, classes)
    assert flag.kind == INDEX and flag.classes == (0, 1)
    assert "2 of the 3 paired classes" in flag.evidence["sentence"]
    assert "class 0: index trouser, search shirt" in view.evidence_sentence(flag.kind, flag.classes, flag.evidence)
    misaligned = _summary([(0, "shirt"), (1, "sandal"), (2, "bag")], identity=True, aligned=0.0)
    assert index_contradiction_flag(misaligned, classes) is not None
    assert index_contradiction_flag({"verdict": "no known dataset order", "dataset": None, "orders": []},
                                    classes) is None
    nothing = [_cls(0, "shirt", found=False), _cls(1, "sandal", found=False)]
    assert index_contradiction_flag(misaligned, nothing) is None  # ImageNet on a small corpus: 0/1000 found


def test_evidence_is_a_sentence():
    text = view.evidence_sentence("mixed-domains", (0, 2), {
        "groups": [{"classes": [0], "domain": {"synset": "d", "name": "digit"}},
                   {"classes": [2], "domain": {"synset": "f", "name": "face"}}], "min_distance": 6.0})
    assert text == ("The found classes split into 2 groups at least 6.0 hops apart in the hierarchy: "
                    "digit (classes 0); face (classes 2).")
    assert "{" not in text


def test_a_bad_ui_url_is_refused_before_the_scan():
    from crawler.scan.options import ScanOptions
    from plugin.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--ui-url"):
        ScanOptions(ui_url="http://")
    with pytest.raises(ConfigError, match="--ui-url"):
        ScanOptions(ui_url="localhost:5000")
    assert ScanOptions(ui_url="http://h:5000").params()["scan.ui_url"] == "http://h:5000"


def test_flags_tag_lists_each_kind_once():
    from plugin.core.findings import Flag

    flags = [Flag("mixed-domains", (0,)), Flag("sink-class", (1,)), Flag("mixed-domains", (2,))]
    assert view.flag_kinds(flags) == "mixed-domains,sink-class" and view.flag_kinds([]) == "none"
