"""The undocumented score: cards and configs, then the whole demo hub."""
from __future__ import annotations

import json

import pytest

from crawler.cards import (MIN_PROSE_WORDS, UNDOCUMENTED_THRESHOLD, assess_documentation, datasets_in_text,
                           has_label_names, is_classifier, split_front_matter)
from plugin.demo.hub import (FASHION_CARD, FRONT_MATTER_ONLY, SKIPPED_DOCUMENTED, build_demo_hub, bump_repo,
                              expected_outcomes, source_models)
from crawler.hub import DirSource

TIMM_CFG = {"architecture": "resnet18", "num_classes": 10}
LONG_PROSE = ("This network was built for a hobby project about sorting photographs in a personal archive. "
              "It uses a compact residual architecture with batch normalisation and was optimised with AdamW "
              "for a handful of epochs, using mild augmentation such as flips and crops, and it runs comfortably "
              "on a laptop CPU. Use it however you like and report problems in the issue tracker of the project.")
TRANSFORMERS_AUTO = """---
license: apache-2.0
tags:
- generated_from_trainer
---
<!-- This model card has been automatically generated. You should probably proofread and complete it. -->

# my-model

This model is a fine-tuned version of [google/vit-base](https://hf.co/google/vit-base) on the None dataset.

## Model description

More information needed

## Intended uses & limitations

More information needed
"""
HUB_TEMPLATE = """---
library_name: timm
---
# Model Card for Model ID

<!-- Provide a quick summary of what the model is/does. -->

## Model Details

- **Developed by:** [More Information Needed]
- **Model type:** [More Information Needed]
"""


def test_no_card_and_no_labels_is_totally_undocumented():
    doc = assess_documentation(None, TIMM_CFG)
    assert doc.score == 1.0 and doc.undocumented
    assert "no model card (README.md)" in doc.reasons and doc.datasets == ()


def test_front_matter_only_card_is_undocumented():
    doc = assess_documentation(FRONT_MATTER_ONLY, TIMM_CFG)
    assert doc.score == 1.0 and doc.undocumented
    assert "model card is only YAML front matter" in doc.reasons


@pytest.mark.parametrize("card", [TRANSFORMERS_AUTO, HUB_TEMPLATE, "# Model card for resnet18.demo\n"])
def test_generated_boilerplate_is_undocumented(card):
    doc = assess_documentation(card, TIMM_CFG)
    assert doc.undocumented and doc.score >= UNDOCUMENTED_THRESHOLD
    assert any("boilerplate" in r or "no prose" in r for r in doc.reasons), doc.reasons
    assert any(r.startswith("only ") and "words of prose" in r for r in doc.reasons)


def test_dataset_in_metadata_and_prose_is_documented():
    doc = assess_documentation(FASHION_CARD, TIMM_CFG)
    assert not doc.undocumented and doc.score == pytest.approx(0.2)
    assert doc.reasons == ("config.json names no classes (no label_names or id2label)",)
    assert doc.datasets == ("fashion_mnist",)  # metadata and prose name the same dataset once


def test_label_names_plus_training_prose_is_documented():
    card = "# Birds\n\n" + LONG_PROSE + " It was trained on the CUB-200 birds photographs collected by Caltech.\n"
    cfg = {**TIMM_CFG, "label_names": [f"bird{i}" for i in range(10)]}
    doc = assess_documentation(card, cfg)
    assert not doc.undocumented and doc.score == pytest.approx(0.2), doc.reasons
    assert doc.datasets == ("cub-200",)
    assert doc.reasons == ("no `datasets:` in the card metadata",)


def test_long_prose_that_never_names_the_data_is_undocumented():
    doc = assess_documentation("# Sorter\n\n" + LONG_PROSE, TIMM_CFG)
    assert doc.undocumented and doc.score == pytest.approx(0.55)
    assert not any("words of prose" in r for r in doc.reasons)
    assert "the card's prose names no training dataset" in doc.reasons


def test_prose_words_exclude_code_tables_and_headings():
    filler = " ".join(["word"] * (MIN_PROSE_WORDS - 5))
    card = f"# A heading with many many many words\n\n{filler}\n\n```python\n{LONG_PROSE}\n```\n\n| a | b |\n|---|---|\n"
    doc = assess_documentation(card, TIMM_CFG)
    assert f"only {MIN_PROSE_WORDS - 5} words of prose (fewer than {MIN_PROSE_WORDS})" in doc.reasons


def test_malformed_yaml_is_a_reason_not_a_crash():
    card = "---\ntags: [unclosed\ndatasets: : :\n---\n" + LONG_PROSE + " Trained on ImageNet-1k.\n"
    doc = assess_documentation(card, TIMM_CFG)
    assert any(r.startswith("malformed YAML front matter") for r in doc.reasons)
    assert "no `datasets:` in the card metadata" in doc.reasons
    assert doc.datasets == ("imagenet-1k",)
    fm = split_front_matter("---\n- just\n- a list\n---\nbody\n")
    assert fm.meta is None and "not a mapping" in fm.error and fm.body == "body\n"


def test_dataset_names_in_prose():
    assert datasets_in_text("Fine-tuned on CIFAR-100 after ImageNet-21k pretraining") == ("cifar100", "imagenet-21k")
    assert datasets_in_text("We used Fashion-MNIST.") == ("fashion_mnist",)
    assert datasets_in_text("plain MNIST digits and cifar10") == ("mnist", "cifar10")
    assert datasets_in_text("trained on the Oxford Pets photos") == ("oxford_pets",)
    assert datasets_in_text("It was trained on ScanNet indoor scenes") == ("scannet",)
    assert datasets_in_text("pre-trained on Google Landmarks v2") == ("google_landmarks",)
    assert datasets_in_text("A model for images. It works well.") == ()


def test_label_names_and_classifier_detection():
    assert has_label_names({"num_classes": 2, "label_names": ["cat", "dog"]})
    assert has_label_names({"id2label": {"0": "cat", "1": "dog"}})
    assert not has_label_names({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}})  # transformers placeholders
    assert not has_label_names(None)
    assert is_classifier(TIMM_CFG)
    assert not is_classifier({"architecture": "resnet18", "num_classes": 0})
    assert is_classifier({"architecture": "vit", "id2label": {"0": "a"}})
    assert not is_classifier(None)


def test_demo_hub_documentation(demo_models, tmp_path):
    """Documented demo repos are skipped with reasons; all the others are flagged."""
    expected = build_demo_hub(tmp_path / "hub")
    assert expected == expected_outcomes()
    assert set(source_models()) == {r for r, o in expected.items() if o == "investigate"}
    models = {m.repo_id: m for m in DirSource(tmp_path / "hub").list_models()}
    assert sorted(models) == sorted(expected)
    for repo_id, m in models.items():
        doc = assess_documentation(m.card_text, m.config)
        if expected[repo_id] == SKIPPED_DOCUMENTED:
            assert not doc.undocumented and doc.score < UNDOCUMENTED_THRESHOLD, (repo_id, doc)
            assert doc.datasets and doc.reasons  # what is still missing is recorded
        else:
            assert doc.undocumented and doc.score >= 0.8, (repo_id, doc)
    assert "fashion_mnist" in assess_documentation(models["demo/fashion-documented"].card_text, None).datasets
    assert "uci_digits" in assess_documentation(models["demo/digits-labelled"].card_text, None).datasets

    # Idempotent: a second build leaves the files alone; a bump changes exactly one sha.
    config = tmp_path / "hub" / "demo" / "footwear" / "config.json"
    before = config.stat().st_mtime_ns
    build_demo_hub(tmp_path / "hub")
    assert config.stat().st_mtime_ns == before
    bump_repo(tmp_path / "hub", "demo/footwear")
    after = {m.repo_id: m.sha for m in DirSource(tmp_path / "hub").list_models()}
    assert [r for r in after if after[r] != models[r].sha] == ["demo/footwear"]
    assert json.loads(config.read_text())["revision_counter"] == 1


@pytest.mark.parametrize("dataset", ["imagefolder", "image_folder", "custom", "none"])
def test_a_trainer_card_is_undocumented_and_the_base_models_data_is_not_documentation(dataset):
    from plugin.demo.hf_repos import trainer_card

    cfg = {"architectures": ["ViTForImageClassification"], "id2label": {"0": "cat", "1": "dog"}}
    doc = assess_documentation(trainer_card("vit-pets", dataset=dataset), cfg)
    assert doc.undocumented and doc.score >= 0.8, doc
    assert doc.datasets == () and doc.base_datasets == ("imagenet-21k",)  # from google/vit-...-in21k
    assert any("only a loader or placeholder" in r for r in doc.reasons)
    assert any("generator" in r and "generated_from_trainer" in r for r in doc.reasons)
    assert any("base model" in r and "pretraining data" in r for r in doc.reasons)


def test_a_trainer_card_whose_author_wrote_about_the_data_is_documented():
    from plugin.demo.hf_repos import trainer_card

    card = trainer_card("vit-flowers", dataset="oxford_flowers102").replace(
        "## Training and evaluation data\n\nMore information needed",
        "## Training and evaluation data\n\n" + LONG_PROSE + " It was fine-tuned on the Oxford Flowers 102 "
        "photographs of British wild flowers, 1,020 training images in 102 species.")
    doc = assess_documentation(card, {"id2label": {"0": "rose", "1": "daisy"}})
    assert not doc.undocumented and "flowers102" in doc.datasets, doc
    assert doc.base_datasets == ("imagenet-21k",)  # still reported, never counted as documentation


def test_autotrain_card_and_listing_card_data():
    card = ("---\ntags:\n- autotrain\n- image-classification\ndatasets:\n- user/autotrain-data-abc\n---\n"
            "# Model Trained Using AutoTrain\n\n- Problem type: Image Classification\n\n## Validation Metrics\n"
            "- loss: 0.12\n- accuracy: 0.96\n")
    doc = assess_documentation(card, None)
    assert doc.undocumented and any("autotrain" in r for r in doc.reasons)
    # Without the README text, the listing's cardData still gives the metadata.
    listed = assess_documentation(None, None, {"datasets": ["cifar10"]})
    assert listed.datasets == ("cifar10",) and "no `datasets:` in the card metadata" not in listed.reasons
