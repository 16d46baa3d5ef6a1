"""Recipes (YAML knobs) and the random expansion E of METHOD.md step 1."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import skimage.data
import yaml

import plugin.core.recipe
from plugin.core.errors import ConfigError
from plugin.core.recipe import RECIPES_DIR, Recipe
from plugin.core.transforms import expand_leaf, random_homographies

FIELDS = [f.name for f in dataclasses.fields(Recipe)]
SHIPPED = sorted(RECIPES_DIR.glob("*.yaml"))


# -- recipes ---------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipes_load_by_name(path):
    by_name = Recipe.load(path.stem)
    assert by_name == Recipe.load(path) == Recipe.load(str(path))
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in data.items():
        got = getattr(by_name, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key  # YAML lists load as tuples


@pytest.mark.skipif(not (RECIPES_DIR / "default.yaml").is_file(), reason="no recipes/default.yaml")
def test_default_recipe_is_the_defaults():
    assert Recipe.load("default") == Recipe()
    listed = set(yaml.safe_load((RECIPES_DIR / "default.yaml").read_text()))
    assert listed == set(FIELDS)  # every knob, so the file documents them all


def test_bare_name_lookup(tmp_path, monkeypatch):
    (tmp_path / "quick.yaml").write_text("images_per_leaf: 7\nchecks: [labels]\n")
    monkeypatch.setattr(plugin.core.recipe, "RECIPES_DIR", tmp_path)
    r = Recipe.load("quick")
    assert r.images_per_leaf == 7 and r.checks == ("labels",)
    assert r.transforms_per_image == Recipe().transforms_per_image
    with pytest.raises(ConfigError, match="not found"):
        Recipe.load("slow")


def test_load_from_path(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("alpha: 0.4\nk_max: 6\nquery_budget: 1000\ncheck_options: {labels: {threshold: 0.5}}\n")
    r = Recipe.load(path)
    assert (r.alpha, r.k_max, r.query_budget) == (0.4, 6, 1000)
    assert r.check_options == {"labels": {"threshold": 0.5}}
    assert Recipe.load(None) == Recipe()
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert Recipe.load(tmp_path / "empty.yaml") == Recipe()


def test_unknown_keys_list_the_valid_ones(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("images_per_lef: 10\nalpha: 0.5\n")
    with pytest.raises(ConfigError) as err:
        Recipe.load(path)
    msg = str(err.value)
    assert "images_per_lef" in msg
    assert all(name in msg for name in FIELDS)
    with pytest.raises(ConfigError, match="images_per_leaf"):
        Recipe.from_dict({"bogus": 1})


@pytest.mark.parametrize("changes, match", [
    ({"images_per_leaf": 0}, "images_per_leaf"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": -0.1}, "threshold"),
    ({"alpha": 0}, "alpha"),
    ({"alpha": 1}, "alpha"),
    ({"k_min": 3, "k_max": 2}, "k_min"),
    ({"k_min": 0}, "k_min"),
    ({"top_k": 0}, "top_k"),
    ({"transforms_per_image": 0, "include_original": False}, "copy"),
    ({"transforms_per_image": -1}, "copy"),
    ({"threshold": "high"}, "invalid recipe"),
    ({"images_per_leaf": None}, "invalid recipe"),
])
def test_invalid_values(changes, match):
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(changes)


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        Recipe.from_dict({"threshold": 2, "alpha": 5, "top_k": 0})
    assert all(k in str(err.value) for k in ("threshold", "alpha", "top_k"))


@pytest.mark.parametrize("text", ["[1, 2, 3]\n", "just a string\n", "alpha: [unclosed\n"])
def test_malformed_yaml(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        Recipe.load(path)


def test_copies_per_image():
    assert Recipe(transforms_per_image=3, include_original=True).copies_per_image == 4
    assert Recipe(transforms_per_image=3, include_original=False).copies_per_image == 3
    assert Recipe(transforms_per_image=0, include_original=True).copies_per_image == 1


def test_to_params_covers_every_field():
    r = Recipe.from_dict({"checks": ["labels", "dataset_index"], "query_budget": 500,
                          "check_options": {"labels": {"threshold": 0.5, "vectors": "glove"}, "top": 3}})
    params = r.to_params()
    for name in FIELDS:
        assert name in params or any(k.startswith(name + ".") for k in params), name
    assert all(isinstance(v, str) for v in params.values())
    assert params["checks"] == "labels,dataset_index"
    assert params["query_budget"] == "500"
    assert params["check_options.labels.threshold"] == "0.5"
    assert params["check_options.labels.vectors"] == "glove"
    assert params["check_options.top"] == "3"
    for name in FIELDS:
        if name not in ("checks", "check_options"):
            assert params[name] == str(getattr(r, name)), name
    # a changed knob shows up as a changed param
    assert Recipe(alpha=0.7).to_params()["alpha"] != Recipe().to_params()["alpha"]


def test_to_dict_round_trips():
    r = Recipe.from_dict({"checks": ["labels"], "seed": 3, "check_options": {"labels": {"threshold": 0.5}}})
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.replace(seed=4).seed == 4 and r.seed == 3


# -- expansion -------------------------------------------------------------------
def _leaf():
    rng = np.random.default_rng(0)
    coffee = skimage.data.coffee()[::8, ::8]  # 50x75 RGB
    return [coffee, rng.integers(0, 256, (28, 28), dtype=np.uint8), coffee[:, ::-1].copy(),
            rng.integers(0, 256, (28, 28), dtype=np.uint8)]


def _rgb(img):
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


@pytest.mark.parametrize("r, include", [(3, True), (2, False), (0, True)])
def test_expand_leaf_counts_and_order(r, include):
    recipe = Recipe(transforms_per_image=r, include_original=include)
    images = _leaf()
    out = expand_leaf(images, recipe, seed=1)
    c = recipe.copies_per_image
    assert len(out) == c * len(images)
    for i, img in enumerate(images):
        copies = out[i * c : (i + 1) * c]
        for copy in copies:
            assert copy.dtype == np.uint8 and copy.shape == _rgb(img).shape
        if include:
            assert np.array_equal(copies[0], _rgb(img))
        transformed = copies[1:] if include else copies
        for copy in transformed:
            assert not np.array_equal(copy, _rgb(img))


def test_expand_leaf_keeps_copies_with_their_image():
    """Same-shaped images are warped as one batch; each copy must come back to its own image."""
    colours = [(30, 80, 130), (200, 60, 10), (90, 220, 160), (250, 250, 40)]
    images = [np.broadcast_to(np.array(c, np.uint8), (24, 36, 3)).copy() for c in colours]
    images.insert(2, np.full((28, 28), 100, np.uint8))  # another shape in between
    recipe = Recipe(transforms_per_image=3, noise=0.06)
    out = expand_leaf(images, recipe, seed=2)
    k = recipe.copies_per_image
    for i, img in enumerate(images):
        centre = _rgb(img)[img.shape[0] // 2, img.shape[1] // 2].astype(int)
        for copy in out[i * k : (i + 1) * k]:
            h, w = copy.shape[:2]
            patch = copy[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].reshape(-1, 3).astype(int)
            assert np.abs(np.median(patch, axis=0) - centre).max() <= 0.06 * 255 + 1, i


def test_expand_leaf_is_seeded():
    recipe = Recipe()
    images = _leaf()
    a = expand_leaf(images, recipe, seed=5)
    b = expand_leaf(images, recipe, seed=5)
    c = expand_leaf(images, recipe, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    k = recipe.copies_per_image
    transformed = [i for i in range(len(a)) if i % k]  # copy 0 is the original either way
    assert all(not np.array_equal(a[i], c[i]) for i in transformed)
    assert all(np.array_equal(a[i], c[i]) for i in range(0, len(a), k))


def test_expand_leaf_does_not_modify_its_input():
    images = _leaf()
    before = [im.copy() for im in images]
    expand_leaf(images, Recipe(), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(images, before))


def test_no_distortion_is_the_identity():
    recipe = Recipe(noise=0, translate=0, rotate=0, perspective=0, transforms_per_image=2, include_original=False)
    images = _leaf()
    out = expand_leaf(images, recipe, seed=0)
    for i, img in enumerate(images):
        for copy in out[2 * i : 2 * i + 2]:
            assert np.array_equal(copy, _rgb(img))


def test_noise_only_stays_within_its_amplitude():
    recipe = Recipe(noise=0.05, translate=0, rotate=0, perspective=0, transforms_per_image=2, include_original=False)
    img = np.full((20, 30, 3), 128, np.uint8)
    out = expand_leaf([img], recipe, seed=0)
    amp = 0.05 * 255
    for copy in out:
        diff = copy.astype(int) - 128
        assert np.abs(diff).max() <= np.ceil(amp)
        assert np.abs(diff).max() >= amp - 2  # and does use it
        assert abs(diff.mean()) < 1.0  # zero-mean
    assert not np.array_equal(out[0], out[1])


def test_translation_shifts_content():
    recipe = Recipe(noise=0, translate=0.25, rotate=0, perspective=0, transforms_per_image=8, include_original=False)
    img = np.zeros((40, 40, 3), np.uint8)
    img[15:25, 15:25] = 255
    out = expand_leaf([img], recipe, seed=0)
    centres = []
    for copy in out:
        ys, xs = np.nonzero(copy[:, :, 0] > 127)
        centres.append((ys.mean(), xs.mean()))
        assert 60 <= len(ys) <= 140  # the square survives, roughly its size
    centres = np.array(centres)
    assert np.abs(centres - 19.5).max() <= 0.25 * 40 + 1
    assert np.abs(centres - 19.5).max() > 1  # at least one copy moved


def test_rotation_fills_black_corners():
    recipe = Recipe(noise=0, translate=0, rotate=45, perspective=0, transforms_per_image=6, include_original=False)
    img = np.full((32, 32, 3), 200, np.uint8)
    out = expand_leaf([img], recipe, seed=0)
    assert any(copy[0, 0].max() == 0 or copy[-1, -1].max() == 0 for copy in out)
    for copy in out:
        assert copy[16, 16].tolist() == [200, 200, 200]  # the centre stays put


def test_random_homographies_respect_the_recipe():
    rng = np.random.default_rng(0)
    hs = random_homographies(50, 40, 60, Recipe(rotate=10, translate=0.1, perspective=0), rng)
    assert hs.shape == (50, 3, 3)
    assert np.allclose(hs[:, 2], [0, 0, 1])  # affine without perspective
    angles = np.degrees(np.arctan2(hs[:, 1, 0], hs[:, 0, 0]))
    assert np.abs(angles).max() <= 10 and np.abs(angles).max() > 5
    assert np.abs(hs[:, 0, 2]).max() <= 0.1 * 60 and np.abs(hs[:, 1, 2]).max() <= 0.1 * 40
    persp = random_homographies(5, 40, 60, Recipe(rotate=0, translate=0, perspective=0.3), rng)
    assert not np.allclose(persp[:, 2, :2], 0)
