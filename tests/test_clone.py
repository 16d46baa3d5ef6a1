"""Clone validation (paper §5.4): found-domain clone vs random-corpus and true-data clones."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from plugin.core.blackbox import CountingBlackBox
from plugin.checks import CheckContext, get_check
from plugin.core.corpus import Corpus, Leaf
from plugin.core.hierarchy import Hierarchy
from plugin.core.recipe import Recipe
from plugin.core.search import search

# Small enough for 2 CPU cores; the check's defaults (min_steps 200, all held-out images) are for real runs.
FAST_STUDENT = {"epochs": 10, "min_steps": 60, "max_eval": 1500}
TINY_STUDENT = {"epochs": 2, "min_steps": 4, "student_input_size": 16, "batch_size": 16}


class ValueOracle(CountingBlackBox):
    """Exact black box: the label is a function of the image's (constant) red value."""

    def __init__(self, mapping: dict[int, int], num_classes: int):
        super().__init__(num_classes=num_classes)
        self.mapping = mapping

    def _predict(self, images):
        return np.array([self.mapping.get(int(np.median(im[:, :, 0])) // 40, 0) for im in images])


def _img(level: int, jitter: int = 0) -> np.ndarray:
    return np.full((16, 16, 3), min(40 * level + jitter, 255), np.uint8)


def tiny_setup(tmp_path, model_id="tiny", options=None):
    leaves = ["n02690373", "n04552348", "n02123045", "n02123394"]  # airliner, warplane, tabby, persian
    h = Hierarchy.from_wordnet(leaves)
    corpus = Corpus("tiny", [Leaf(s, h.name(s), [_img(k, j) for j in range(8)]) for k, s in enumerate(leaves)], h)
    recipe = Recipe(images_per_leaf=8, transforms_per_image=1, noise=0, rotate=0, translate=0, perspective=0,
                    score_pass="exhaustive",
                    min_samples=1, coherence=0)
    bb = ValueOracle({0: 0, 1: 0, 2: 1, 3: 1}, num_classes=2)
    result = search(bb, corpus, recipe, model=model_id)
    info = SimpleNamespace(num_classes=2, label_names=["aircraft", "cat"], pretrained_cfg={})
    return CheckContext(bb, corpus, result, recipe, info, dict(options or {}), tmp_path, model_id)


def test_not_applicable_without_true_data(tmp_path):
    ctx = tiny_setup(tmp_path)
    q = ctx.blackbox.num_queries
    res = get_check("clone")(ctx)
    assert not res.applicable and "heldout" in res.reason
    assert ctx.blackbox.num_queries == q  # no queries spent on a check that does not apply
    res = get_check("clone")(tiny_setup(tmp_path, options={"heldout": str(tmp_path / "missing")}))
    assert not res.applicable and "not found" in res.reason
    # auto_demo only applies to demo model names
    res = get_check("clone")(tiny_setup(tmp_path, model_id="footwear", options={"auto_demo": False}))
    assert not res.applicable


def test_bad_folder_layout_is_not_applicable(tmp_path):
    from PIL import Image

    root = tmp_path / "heldout"
    (root / "cat").mkdir(parents=True)
    Image.fromarray(_img(2)).save(root / "cat" / "a.png")
    res = get_check("clone")(tiny_setup(tmp_path, options={"heldout": str(root)}))
    assert not res.applicable and "class indices" in res.reason


def test_imagefolder_heldout(tmp_path):
    from PIL import Image

    root = tmp_path / "heldout"
    for cls, levels in {0: (0, 1), 1: (2, 3)}.items():
        (root / str(cls)).mkdir(parents=True)
        for n in range(6):
            Image.fromarray(_img(levels[n % 2], n)).save(root / str(cls) / f"{n:02d}.png")
    ctx = tiny_setup(tmp_path, options={"heldout": str(root), **TINY_STUDENT})
    q0 = ctx.blackbox.num_queries
    res = get_check("clone")(ctx)
    assert res.applicable, res.reason
    s = res.summary
    n = s["transfer_size"]
    assert n == len({p for c in ctx.result.classes for p in c.samples}) == 32
    assert s["found_labels_reused"] and s["eval_size"] == 6  # odd positions: 3 per class
    # found labels come from the search pass; random needs n queries, true min(n, 6 transfer-half images)
    assert s["queries"] == ctx.blackbox.num_queries - q0 == n + 6
    assert [r["label"] for r in s["table"]] == ["aircraft", "cat"]
    for row in s["table"]:
        assert all(0.0 <= row[c] <= 1.0 for c in ("found", "random", "true"))
    assert set(res.metrics) >= {"clone.found_acc", "clone.random_acc", "clone.true_acc"}
    csv_path, md_path = tmp_path / "clone" / "clone_table.csv", tmp_path / "clone" / "clone_table.md"
    assert set(res.artifacts) == {csv_path, md_path}
    assert csv_path.read_text().splitlines()[0] == "class,label,true,found,random"
    md = md_path.read_text()
    assert "true-data clone | found-domain clone | random-corpus clone" in md and "**Average**" in md


def test_requery_when_recipe_sends_no_originals(tmp_path):
    from PIL import Image

    root = tmp_path / "heldout"
    for cls in (0, 1):
        (root / str(cls)).mkdir(parents=True)
        for n in range(2):
            Image.fromarray(_img(2 * cls, n)).save(root / str(cls) / f"{n}.png")
    ctx = tiny_setup(tmp_path, options={"heldout": str(root), **TINY_STUDENT, "max_transfer": 10})
    ctx = CheckContext(ctx.blackbox, ctx.corpus, ctx.result, ctx.recipe.replace(include_original=False),
                       ctx.info, ctx.options, ctx.out_dir, ctx.model_id)
    q0 = ctx.blackbox.num_queries
    res = get_check("clone")(ctx)
    assert res.summary["transfer_size"] == 10 and not res.summary["found_labels_reused"]
    assert res.summary["queries"] == ctx.blackbox.num_queries - q0 == 10 + 10 + 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["footwear", "upper-body"])
def test_clone_on_demo_models(name, demo_models, demo_corpus, tmp_path):
    from plugin.models.torch_blackbox import TorchBlackBox
    from plugin.models.checkpoint import inspect_checkpoint
    from plugin.demo.models import DEMO_MODELS, model_dir

    bb = TorchBlackBox.from_folder(model_dir(name))
    recipe = Recipe.load("demo")
    result = search(bb, demo_corpus, recipe, model=name)
    ctx = CheckContext(bb, demo_corpus, result, recipe, inspect_checkpoint(model_dir(name)),
                       {"heldout": f"demo:{name}", **FAST_STUDENT}, tmp_path, name)
    q0, t0 = bb.num_queries, time.time()
    res = get_check("clone")(ctx)
    print(f"\n{name}: {time.time() - t0:.1f} s\n" + (tmp_path / "clone" / "clone_table.md").read_text())
    assert res.applicable, res.reason
    s = res.summary
    assert s["queries"] == bb.num_queries - q0 == 2 * s["transfer_size"]  # found labels reused: 0 queries
    assert len(s["table"]) == len(DEMO_MODELS[name].classes)
    for row in s["table"]:
        assert all(isinstance(row[c], float) for c in ("found", "random", "true")), row
    assert (tmp_path / "clone" / "clone_table.csv").is_file() and (tmp_path / "clone" / "clone_table.md").is_file()
    # Well above chance (1/3 for the 3-class models, 1/4 for upper-body): the transfer set's size follows
    # what the search found, so the true-data clone's accuracy moves with it (upper-body: 0.41-0.48).
    assert s["average"]["true"] > 1.5 / len(DEMO_MODELS[name].classes)
    # The found clone must beat the random clone on the classes whose found leaves contain the
    # class's true leaf. A class the search located elsewhere (footwear's ankle boot lands in the
    # digits, the catch-all of a 3-class model) is exactly what clone validation exposes.
    located = [c.index for c in result.findings.classes
               if DEMO_MODELS[name].synsets[c.index] in {n.synset for n in c.leaves}]
    assert located, "the search located no class at all"
    found = np.mean([s["table"][i]["found"] for i in located])
    rand = np.mean([s["table"][i]["random"] for i in located])
    assert found > rand, (located, s["table"])
    if len(located) == len(s["table"]):
        assert s["average"]["found"] > s["average"]["random"]


# -- the generated arm (Method 1): a procedural generator whose domains are the red levels of the tiny world ------
LEVEL_WORDS = ("airliner", "military plane", "tabby", "persian")  # the tiny corpus's leaves (their WordNet
# lemmas), level 0..3 for the ValueOracle


class LevelGenerator:
    """Conditioning ``(1, 4)``: the weights of the level words in the text. A sample picks a level with
    probability proportional to the (clipped) weights, from its seed alone, and paints it (:func:`_img`)."""

    def encode_prompts(self, prompts):
        return np.stack([[[float(w in p.lower()) for w in LEVEL_WORDS]] for p in prompts]).astype(np.float32)

    def generate(self, embeddings, seeds):
        out = np.zeros((len(embeddings), len(seeds), 16, 16, 3), np.uint8)
        for i, e in enumerate(np.asarray(embeddings)):
            w = np.clip(e[0], 0, None) + 1e-6
            for j, s in enumerate(seeds):
                rng = np.random.default_rng(int(s))
                level = int(np.searchsorted(np.cumsum(w / w.sum()), rng.random()))
                out[i, j] = _img(min(level, 3), int(rng.integers(0, 8)))
        return out


class LevelEncoder:
    def encode_text(self, prompts):
        return LevelGenerator().encode_prompts(prompts)[:, 0] + 0.1

    def encode_images(self, images):
        return np.stack([np.eye(4)[min(int(np.median(im[:, :, 0])) // 40, 3)] for im in images]).astype(np.float32)


LEVEL_LOADS: list = []  # the configs the "levels" generator was loaded with, one per load


@pytest.fixture
def levels():
    """Registers the procedural generator and encoder as "levels" (removed afterwards) and gives their options."""
    from plugin.generative.real import ENCODERS, GENERATORS

    LEVEL_LOADS.clear()
    GENERATORS["levels"] = lambda config: LEVEL_LOADS.append(config) or LevelGenerator()
    ENCODERS["levels"] = lambda config: LevelEncoder()
    yield {"sd_dir": "procedural", "clip_dir": "procedural", "generator": "levels", "encoder": "levels",
            "classes": "all", "k": 2, "pool": 4, "rounds": 1, "seeds": 4, "start_prompts": 4, "montage_seeds": 2,
            "lam": 0.1, "device": "cpu"}
    del GENERATORS["levels"], ENCODERS["levels"]


def _heldout(root):
    from PIL import Image

    for cls, lv in {0: (0, 1), 1: (2, 3)}.items():
        (root / str(cls)).mkdir(parents=True)
        for n in range(6):
            Image.fromarray(_img(lv[n % 2], n)).save(root / str(cls) / f"{n:02d}.png")
    return str(root)


@pytest.mark.slow
def test_generated_arm_trains_a_clone_on_generated_samples(tmp_path, levels):
    from plugin.checks.base import run_order
    from plugin.generative.real import load_embeddings
    from plugin.investigate import run_followups

    clone_opts = {"heldout": _heldout(tmp_path / "heldout"), **TINY_STUDENT, "max_transfer": 24}
    ctx = tiny_setup(tmp_path)
    bb = ctx.blackbox
    names = run_order(["clone", "generative"])
    assert names == ("generative", "clone")  # the clone check reads the generative check's result
    q0 = bb.num_queries
    gen, clone = run_followups(list(names), bb, ctx.corpus, ctx.result, ctx.recipe, ctx.info, "tiny", tmp_path,
                               {"clone": clone_opts, "generative": levels})
    assert gen.applicable and clone.applicable, (gen.reason, clone.reason)
    assert len(LEVEL_LOADS) == 1  # the clone check samples the generator the generative check loaded
    s, g = clone.summary, clone.summary["generated"]
    n = s["transfer_size"]
    assert n == 24 and sum(c["images"] for c in g["classes"]) == s["transfer_sizes"]["generated"] == n
    assert [c["class"] for c in g["classes"]] == [c["index"] for c in gen.summary["classes"] if c["embeddings"]]
    # G is labelled by the black box like B and C: n more queries, all counted, none hidden.
    assert s["queries"] == n + 6 + n and bb.num_queries - q0 == gen.summary["queries"] + s["queries"]
    # G is reproducible from what was recorded: the saved embeddings on the recorded seeds, which start with the
    # seeds the search scored on, give back the labels G was trained on.
    labels = []
    for rec, cls in zip(g["classes"], gen.summary["classes"]):
        # 12 images from 2 embeddings: 6 seeds, the 4 scored ones and 2 after the montage's 2
        assert rec["seeds"] == [*cls["seeds"], cls["seeds"][-1] + 3, cls["seeds"][-1] + 4]
        emb = load_embeddings(tmp_path / "generative" / f"class_{rec['class']:04d}" / "embeddings.npy")
        drawn = LevelGenerator().generate(emb, rec["seeds"]).swapaxes(0, 1).reshape(-1, 16, 16, 3)[:rec["images"]]
        labels += list(ValueOracle({0: 0, 1: 0, 2: 1, 3: 1}, 2).predict(list(drawn)))
    assert np.bincount(labels, minlength=2).tolist() == s["transfer_label_counts"]["generated"]
    assert s["transfer_label_counts"]["generated"][0] > 0 and s["transfer_label_counts"]["generated"][1] > 0
    assert "clone.generated_acc" in clone.metrics and "generated " in s["verdict"]
    header = (tmp_path / "clone" / "clone_table.csv").read_text().splitlines()[0]
    assert header == "class,label,true,found,random,generated"
    assert "generated-domain clone" in (tmp_path / "clone" / "clone_table.md").read_text()
    assert all(0.0 <= row["generated"] <= 1.0 for row in s["table"])
    # The budget covers G like the other arms: one query short of B + C + G and the check does not run.
    bb.budget = bb.num_queries + 3 * n - 1
    again = CheckContext(bb, ctx.corpus, ctx.result, ctx.recipe, ctx.info, clone_opts, tmp_path, "tiny", (gen,))
    short = get_check("clone")(again)
    assert not short.applicable and f"needs {3 * n} more queries" in short.reason


def test_without_generative_findings_the_generated_arm_is_skipped_with_a_reason(tmp_path, levels):
    from plugin.investigate import run_followups

    ctx = tiny_setup(tmp_path)
    opts = {"heldout": _heldout(tmp_path / "heldout"), **TINY_STUDENT, "max_transfer": 8}
    (alone,) = run_followups(["clone"], ctx.blackbox, ctx.corpus, ctx.result, ctx.recipe, ctx.info, "tiny", tmp_path,
                             {"clone": opts})
    assert alone.summary["generated"]["skipped"].startswith("no generative findings: list the generative check")
    assert "generated" not in alone.summary["average"] and alone.summary["queries"] == 8 + 6
    # Every class settled by the corpus, the generative check searches none: still no generated arm.
    gen, clone = run_followups(["generative", "clone"], ctx.blackbox, ctx.corpus, ctx.result, ctx.recipe, ctx.info,
                               "tiny", tmp_path, {"clone": opts, "generative": {**levels, "classes": "unsettled"}})
    assert gen.applicable and gen.summary["classes_searched"] == []
    assert "kept no embeddings" in clone.summary["generated"]["skipped"]
