"""The one-way layers: the core loads no I/O stack, registries explain themselves, no leaks."""
from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest

from plugin.core.errors import UnknownNameError
from plugin.core.hierarchy import Hierarchy, default_wordnet, wordnet_related
from plugin.core.registry import Registry

CORE = ["plugin.core.errors", "plugin.core.registry", "plugin.core.settings", "plugin.core.recipe",
        "plugin.core.findings", "plugin.core.hierarchy", "plugin.core.corpus", "plugin.core.blackbox",
        "plugin.core.images", "plugin.core.transforms", "plugin.core.scores", "plugin.core.clusters",
        "plugin.core.verdict", "plugin.core.search"]
HEAVY = ["mlflow", "huggingface_hub", "torch", "torchvision", "timm", "safetensors"]


def test_importing_the_core_loads_no_mlflow_hub_or_torch():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CORE)
            + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "none"


def test_a_control_import_does_load_torch():
    # The subprocess check above can fail: the same probe sees torch once something imports it.
    code = "import sys\nimport plugin.core.search\nimport torch\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"


def test_registry_decorator_get_names_and_unknown_name_error():
    reg: Registry = Registry("widget")

    @reg.register("b")
    def b():
        return "b"

    reg.register("a", lambda: "a")
    assert reg.names() == ["a", "b"] and "a" in reg and reg.get("b") is b
    with pytest.raises(UnknownNameError) as e:
        reg.get("zzz")
    assert "unknown widget 'zzz'" in str(e.value) and "a, b" in str(e.value)
    with pytest.raises(KeyError):  # the error hierarchy subclasses built-ins
        reg.get("zzz")


def test_demo_parts_plug_in_through_entry_points_only():
    from crawler.hub import SOURCES
    from plugin.checks.clone import HELDOUT
    from plugin.corpora import CORPORA
    from plugin.corpora.aux import NAMED_AUX_CORPORA

    assert "demo" in CORPORA.names() and "demo" in SOURCES.names() and "demo" in HELDOUT.names()
    assert {"demo-fashion", "demo-digits-faces"} <= set(NAMED_AUX_CORPORA.names())
    with pytest.raises(UnknownNameError, match="valid: demo, dir, hf"):
        SOURCES.get("nosuch")


def test_cli_help_lists_checks_from_the_registry(capsys):
    from plugin.checks import available_checks
    from plugin.cli import main

    with pytest.raises(SystemExit):
        main(["investigate", "--help"])
    out = capsys.readouterr().out.replace("\n", " ")
    for name in available_checks():
        assert name in out


def _hierarchies() -> int:
    gc.collect()
    return sum(isinstance(o, Hierarchy) for o in gc.get_objects())


def test_hierarchy_instances_do_not_accumulate_over_1000_relatedness_calls():
    wn = default_wordnet()
    a, b = "n04552348", "n02690373"  # warplane, airliner
    before = _hierarchies()
    for k in range(1000):
        wordnet_related(a if k % 2 else b, "n02691156", wn)  # airplane
    assert _hierarchies() <= before
    assert wordnet_related("n02690373", "n02691156") and not wordnet_related("n02690373", "n04552348")


def test_a_hierarchy_is_freed_after_its_cached_queries():
    h = Hierarchy.from_wordnet(["n02690373", "n04552348"])
    h.ancestors("n02690373"), h.depth("n04552348"), h.distance("n02690373", "n04552348")
    ref = weakref.ref(h)
    del h
    gc.collect()
    assert ref() is None  # an lru_cache on a method would keep it alive
