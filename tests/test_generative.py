"""Method 1 (generative domain search): the search's logic on a fake world whose answer is known, and the
real Stable Diffusion + CLIP plumbing on tiny random models built offline in tmp_path.

Random weights make a found domain meaningless, so the real-model tests assert plumbing and accounting
(loading, refusals, queries, budget, top-k, the objective, reloadable artifacts that reproduce their labels).
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from plugin.core.blackbox import CountingBlackBox
from plugin.core.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from plugin.generative import GenerativeConfig, Prompt, search_class
from plugin.generative.search import objective_terms

# -- a fake world: prompts are attribute words, images paint their attribute vector ---------------------------
ATTRS = ("red", "blue", "green", "stripes", "dots", "plain")
NOISE = 0.3


def attribute_vector(text: str) -> np.ndarray:
    words = text.split()
    return np.array([float(a in words) for a in ATTRS], np.float32)


def seed_noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, NOISE, len(ATTRS)).astype(np.float32)


class PaintGenerator:
    """Conditioning ``(1, D)`` is the attribute vector; an image is that vector plus the seed's noise, painted."""

    def __init__(self):
        self.calls = 0

    def encode_prompts(self, prompts):
        return np.stack([attribute_vector(p)[None] for p in prompts])

    def generate(self, embeddings, seeds):
        self.calls += 1
        out = np.zeros((len(embeddings), len(seeds), 4, len(ATTRS), 3), np.uint8)
        for i, e in enumerate(np.asarray(embeddings)):
            for j, s in enumerate(seeds):
                v = e[0] + seed_noise(s)
                out[i, j] = np.clip(np.round(128 + 50 * v), 0, 255).astype(np.uint8)[None, :, None]
        return out


def decode(image: np.ndarray) -> np.ndarray:
    return (np.asarray(image, np.float32)[0, :, 0] - 128) / 50


class PaintEncoder:
    def encode_text(self, prompts):
        return np.stack([attribute_vector(p) for p in prompts])

    def encode_images(self, images):
        return np.stack([decode(im) for im in images])


class GreenBlackBox(CountingBlackBox):
    """Class 0 is "green things", class 1 everything else."""

    def __init__(self, budget=None):
        super().__init__(num_classes=2, budget=budget)

    def _predict(self, images):
        return [0 if decode(im)[2] > 0.5 else 1 for im in images]


NEIGHBOURS = {"red": ["green", "plain"], "blue": ["dots"], "green": ["stripes"], "plain": [], "dots": []}


def neighbours(prompt: Prompt) -> list[Prompt]:
    return [Prompt(t, t, "edit") for t in NEIGHBOURS.get(prompt.text, [])]


@pytest.mark.parametrize("seed", range(4))
def test_search_finds_the_domain_the_warm_start_missed(seed):
    # The corpus guessed "red" and "blue"; the model's class is "green", a WordNet neighbour of "red".
    cfg = GenerativeConfig(k=2, pool=7, rounds=3, seeds=4, lam=0.5, perturb_scale=0.2, interpolate=0.2,
                           perturb=0.2, seed=seed)
    bb = GreenBlackBox()
    res = search_class(0, [Prompt("red", "red"), Prompt("blue", "blue")], PaintGenerator(), PaintEncoder(),
                       bb.predict, cfg, neighbours)
    assert res.relevance == 1.0 and res.nearest[0][0] == "green"
    heaviest = max(res.kept[0].weights, key=lambda jw: jw[1])[0]
    assert res.prompts[heaviest].text == "green"
    assert res.history[0] < 0.1 < 0.5 < res.history[-1]  # the warm start's samples are almost never green
    # Top-k of (kept + new) never gets worse, and k embeddings are kept.
    assert all(b >= a - 1e-12 for a, b in zip(res.history, res.history[1:])) and len(res.history) == 4
    assert len(res.kept) == cfg.k == len(res.embeddings) == len(res.text)
    # Accounting: every scored candidate cost ``seeds`` queries, all through the black box.
    assert res.queries == bb.num_queries == res.evaluated * cfg.seeds <= cfg.queries_per_class
    for s in res.kept:
        assert s.objective == pytest.approx(cfg.lam * s.generality + s.relevance)


def test_generality_term_prefers_the_wider_distribution():
    # Both prompts are always "green"; the one-attribute text sits closer to the seed noise, so its samples
    # stray further from their text: higher generality, and it wins the single slot.
    texts = ["green stripes dots", "green"]
    cfg = GenerativeConfig(k=1, pool=2, rounds=0, seeds=6, lam=1.0)
    res = search_class(0, [Prompt(t) for t in texts], PaintGenerator(), PaintEncoder(), GreenBlackBox().predict, cfg)
    assert res.nearest[0][0] == "green" and res.relevance == 1.0
    e = attribute_vector("green")
    cos = [np.dot(e + seed_noise(s), e) / np.linalg.norm(e + seed_noise(s)) / np.linalg.norm(e) for s in res.seeds]
    assert res.generality == pytest.approx(-np.mean(cos), abs=0.02)  # 0.02: pixels are quantised to 1/50
    rel, gen, obj = objective_terms(np.zeros((2, 1, 1, 3)), np.array([0, 1]), 0, np.array([[1.0, 0], [0, 1.0]]),
                                    np.array([1.0, 0.0]), lam=2.0)
    assert (rel, gen, obj) == (0.5, -0.5, -0.5)


def test_budget_stops_before_a_batch_that_would_pass_it():
    cfg = GenerativeConfig(k=2, pool=5, rounds=3, seeds=4)
    bb = GreenBlackBox()
    res = search_class(0, [Prompt("red", "red"), Prompt("blue", "blue")], PaintGenerator(), PaintEncoder(),
                       bb.predict, cfg, neighbours, budget=10)
    assert res.queries == bb.num_queries == 8 and res.stopped == "budget" and res.rounds == 0
    again = search_class(0, [Prompt("red", "red"), Prompt("blue", "blue")], PaintGenerator(), PaintEncoder(),
                         GreenBlackBox().predict, cfg, neighbours, budget=10)
    assert again.kept == res.kept  # deterministic for a config


def test_config_refuses_bad_options_in_one_line():
    with pytest.raises(ConfigError, match="unknown generative options"):
        GenerativeConfig.from_options({"kk": 3})
    with pytest.raises(ConfigError, match="'k' must be int"):
        GenerativeConfig.from_options({"k": "3"})
    with pytest.raises(ConfigError, match="k <= pool"):
        GenerativeConfig.from_options({"k": 9, "pool": 4})
    assert GenerativeConfig.from_options({"lam": 1, "max_queries": None}).lam == 1.0


# -- tiny real Stable Diffusion and CLIP, built offline -------------------------------------------------------
WORDS = ("a photo of the sandal sneaker ankle boot shoe footwear covering for feet trouser shirt dress pullover "
         "coat bag garment clothing digit numeral face person green red").split()
MAX_LEN = 16


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([" ".join(WORDS)] * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>"))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    return CLIPTokenizerFast(vocab=model["vocab"], merges=merges, model_max_length=MAX_LEN)


def text_config(tok) -> dict:
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    return dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                vocab_size=len(tok), max_position_embeddings=MAX_LEN, projection_dim=16, eos_token_id=eos,
                pad_token_id=eos, bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"))


def build_tiny_sd(folder, tok):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=32)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text_config(tok))),
                                   tokenizer=tok, unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_clip(folder, tok):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(1)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text_config(tok), vision_config=vision, projection_dim=16)).save_pretrained(
        folder, safe_serialization=True)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on 16x16 latents: a second thread only adds synchronisation, which on a loaded 2-core
    machine made one denoising call 70x slower (7.8 s against 0.1 s for 8 images); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("generative")
    tok = tiny_tokenizer()
    return build_tiny_sd(root / "sd", tok), build_tiny_clip(root / "clip", tok)


def tiny_options(sd, clip, **over) -> dict:
    return {"sd_dir": str(sd), "clip_dir": str(clip), "steps": 2, "image_size": 32, "seeds": 2, "k": 2, "pool": 4,
            "rounds": 1, "start_prompts": 3, "batch_size": 8, "montage_seeds": 2, **over}


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_folders_with_pickles_or_code_are_refused(tiny_weights, tmp_path):
    from plugin.generative.real import check_clip_folder, check_sd_folder

    sd, clip = tiny_weights
    assert check_sd_folder(sd) == sd and check_clip_folder(clip) == clip
    pickled = _copy(sd, tmp_path / "pickled")
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").rename(pickled / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="only pickle weights"):
        check_sd_folder(pickled)
    coded = _copy(sd, tmp_path / "coded")
    (coded / "unet" / "my_unet.py").write_text("import os\n")
    with pytest.raises(UnsafeCheckpointError, match="Python code"):
        check_sd_folder(coded)
    remote = _copy(clip, tmp_path / "remote")
    cfg = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(UnsafeCheckpointError, match="remote code"):
        check_clip_folder(remote)
    custom = _copy(sd, tmp_path / "custom")
    index = json.loads((custom / "model_index.json").read_text())
    (custom / "model_index.json").write_text(json.dumps({**index, "unet": ["my_lib", "MyUNet"]}))
    with pytest.raises(UnsafeCheckpointError, match="my_lib"):
        check_sd_folder(custom)
    # An SD 1.x folder names its safety checker from diffusers' stable_diffusion module: allowed, never loaded.
    (custom / "model_index.json").write_text(json.dumps({**index, "safety_checker": ["stable_diffusion",
                                                                                     "StableDiffusionSafetyChecker"]}))
    assert check_sd_folder(custom) == custom
    with pytest.raises(CheckpointError, match="no such folder"):
        check_sd_folder(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="model_index.json"):
        check_sd_folder(clip)


def test_without_diffusers_the_error_says_what_to_install(monkeypatch):
    from plugin.generative.real import require_extra

    monkeypatch.setitem(sys.modules, "diffusers", None)  # what an environment without the extra looks like
    with pytest.raises(ConfigError, match=r"pip install 'mlflow-domain-finder\[generative\]'.*--clip"):
        require_extra()


def test_cli_refuses_bad_weights_before_any_run(tiny_weights, tmp_path, capsys, monkeypatch):
    from plugin.cli import main

    sd, clip = tiny_weights
    assert main(["investigate", "footwear", "--generative", str(tmp_path / "nowhere"), "--clip", str(clip)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--generative" in err and "no such folder" in err and len(err.splitlines()) == 1
    assert main(["investigate", "footwear", "--generative", str(sd)]) == 2
    assert "--clip CLIP_DIR" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "diffusers", None)
    assert main(["investigate", "footwear", "--generative", str(sd), "--clip", str(clip)]) == 2
    assert "pip install" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # refused before MLflow was touched: no run, no query


@pytest.mark.slow
def test_real_tiny_models_end_to_end(tiny_weights, demo_models, tmp_path, capsys):
    import mlflow
    import yaml

    from plugin.cli import main
    from plugin.core.recipe import Recipe
    from plugin.demo.models import model_dir
    from plugin.generative.real import load, load_embeddings, sample
    from plugin.investigate import load_blackbox

    sd, clip = tiny_weights
    # A small corpus pass; the generative knobs for tiny models. 3 classes x (2 warm + 1 new candidates) x 2 seeds
    # would be 18 queries: --generative-budget 14 stops the third class after one candidate.
    opts = {k: v for k, v in tiny_options(sd, clip, start_prompts=2, pool=3, guidance=1.0, montage_seeds=1).items()
            if k not in ("sd_dir", "clip_dir")}
    recipe_file = tmp_path / "recipe.yaml"
    # The clone check is listed first: it must still run after the generative check, whose domains it samples.
    clone = {"max_transfer": 12, "epochs": 2, "min_steps": 4, "student_input_size": 16, "batch_size": 16}
    recipe_file.write_text(yaml.safe_dump({"images_per_leaf": 8, "transforms_per_image": 1, "checks": ["clone"],
                                           "check_options": {"generative": opts, "clone": clone}}))
    assert main(["investigate", "footwear", "--corpus", "demo", "--recipe", str(recipe_file), "--no-progress",
                 "--generative", str(sd), "--clip", str(clip), "--generative-classes", "all",
                 "--generative-budget", "14", "--json", str(tmp_path / "findings.json")]) == 0
    printed = capsys.readouterr().out
    findings = json.loads((tmp_path / "findings.json").read_text())
    summary = findings["generative"]
    assert summary["classes_searched"] == [0, 1, 2]
    classes = summary["classes"]
    assert printed.count(": generated '") == 3 and "check generative: generation named" in printed
    # Budget: the stage never passes max_queries; each class's queries are whole candidates of `seeds` samples.
    assert summary["queries"] == sum(c["queries"] for c in classes) == 14
    assert [c["queries"] for c in classes] == [6, 6, 2] and classes[2]["stopped"] == "budget"
    assert all(c["queries"] == c["evaluated"] * 2 for c in classes)
    named = summary["named_by"]
    assert named["generation"] == [c["index"] for c in classes if c["relevance"] >= 0.5]
    assert set(named["neither"]) == {0, 1, 2} - set(named["corpus"]) - set(named["generation"])
    (run_id,) = mlflow.search_runs(search_all_experiments=True)["run_id"]
    run = mlflow.get_run(run_id)
    assert run.data.metrics["generative.queries"] == 14
    # Every knob is a param, the ones left at their defaults too.
    assert run.data.params["recipe.check_options.generative.k"] == "2"
    assert run.data.params["recipe.check_options.generative.perturb_scale"] == "0.3"
    assert run.data.params["recipe.check_options.generative.max_queries"] == "14"
    # The model-level answer says which classes the corpus named and which generation named, with a prompt each.
    said = (f"corpus named {len(named['corpus'])}/3, generation named {len(named['generation'])}/3"
            + "".join(f" ('{classes[i]['embeddings'][0]['nearest_prompts'][0]}'" for i in named["generation"][:1]))
    answer = findings["verdict"]["answer"]
    assert said in answer and f"run {run_id}: {answer}" in printed
    assert said in run.data.tags["mlflow.note.content"]
    # The clone check's generated arm: 12 samples of the saved domains (4 per class), labelled by the black box.
    cl = findings["clone"]
    assert [c["images"] for c in cl["generated"]["classes"]] == [4, 4, 4] and "generated" in cl["average"]
    assert cl["queries"] == 12 + cl["transfer_sizes"]["true"] + 12 and "clone.generated_acc" in run.data.metrics
    search_queries = findings["queries"]
    assert run.data.metrics["queries_total"] == search_queries + 14 + cl["queries"]
    recipe = Recipe.load(str(recipe_file))
    first = classes[0]
    assert 1 <= len(first["embeddings"]) <= 2
    for e in first["embeddings"]:
        assert e["objective"] == pytest.approx(0.5 * e["generality"] + e["relevance"], abs=1e-5)
    folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="generative/class_0000",
                                                 dst_path=str(tmp_path / "dl"))
    emb = load_embeddings(f"{folder}/embeddings.npy")
    assert emb.shape == (len(first["embeddings"]), MAX_LEN, 32)
    assert (tmp_path / "dl" / "class_0000" / "montage.png").is_file()
    # Anyone can sample more: the saved embeddings on the recorded seeds give back the recorded relevance.
    full = {**opts, "sd_dir": str(sd), "clip_dir": str(clip)}
    generator, encoder = load(GenerativeConfig.from_options(full))
    images = sample(generator, emb, first["seeds"])
    assert images.shape == (len(emb), 2, 32, 32, 3) and images.dtype == np.uint8
    bb = load_blackbox(model_dir("footwear"), recipe)
    labels = bb.predict(list(images.reshape(-1, 32, 32, 3))).reshape(len(emb), 2)
    assert [float(np.mean(row == 0)) for row in labels] == [e["relevance"] for e in first["embeddings"]]
    assert np.array_equal(sample(generator, emb, first["seeds"]), images)
    guided, _ = load(GenerativeConfig.from_options({**full, "guidance": 3.0}))  # classifier-free guidance path
    assert not np.array_equal(sample(guided, emb, first["seeds"]), images)
    assert encoder.encode_images(images[0]).shape == (2, 16)
    out = tmp_path / "more"
    assert main(["generative-sample", folder, "--generative", str(sd), "--seeds", "2", "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 2 * len(emb)


@pytest.fixture
def paint_world():
    """The fake world's generator and encoder registered as "paint" (removed afterwards), and their options."""
    from plugin.generative.real import ENCODERS, GENERATORS

    GENERATORS["paint"], ENCODERS["paint"] = (lambda config: PaintGenerator()), (lambda config: PaintEncoder())
    yield {"sd_dir": "paint", "clip_dir": "paint", "generator": "paint", "encoder": "paint", "device": "cpu",
           "classes": "all", "k": 2, "pool": 4, "rounds": 6, "seeds": 4, "start_prompts": 4, "montage_seeds": 0}
    del GENERATORS["paint"], ENCODERS["paint"]


@pytest.mark.slow
def test_plan_keeps_the_generative_budget_from_the_corpus_pass(paint_world, demo_models, demo_corpus, tmp_path):
    from plugin.core.recipe import Recipe
    from plugin.core.search import search
    from plugin.demo.models import model_dir
    from plugin.investigate import investigate, load_blackbox, pass_queries, plan_investigation

    recipe = Recipe(images_per_leaf=8, transforms_per_image=1)  # adaptive: it fits its rounds into the budget
    least = pass_queries(demo_corpus, recipe, least=True)
    options = {"generative": {**paint_world, "max_queries": 40}}
    budget = least + 40
    plan = plan_investigation(demo_corpus, recipe.replace(query_budget=budget), ["generative"], options)
    assert plan.reserved == 40 and plan.queries == plan.score_queries + 40
    with pytest.raises(ConfigError, match=rf"budget {budget - 1} is below the {budget} queries .*\+ generative 40;"):
        plan_investigation(demo_corpus, recipe.replace(query_budget=budget - 1), ["generative"], options)
    # Alone, the adaptive pass spends into the 40; with the generative check listed it leaves them for its stage.
    alone = search(load_blackbox(model_dir("footwear"), recipe.replace(query_budget=budget)), demo_corpus,
                   recipe.replace(query_budget=budget), model="footwear")
    assert alone.findings.queries > least
    inv = investigate(model_dir("footwear"), demo_corpus, recipe.replace(query_budget=budget), checks=["generative"],
                      check_options=options, progress=False, json_out=tmp_path / "f.json")
    found = json.loads((tmp_path / "f.json").read_text())
    assert found["queries"] <= least and found["generative"]["queries"] == 40
    assert inv.metrics["queries_total"] == found["queries"] + 40 <= budget
