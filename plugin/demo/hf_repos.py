"""Repos in the layouts the Hub is full of: transformers Trainer fine-tunes, ONNX exports, remote code, the rest.

Writers for tiny, real models (built offline, written with transformers' own
``save_pretrained``), used by the demo hub and the tests, and the demo's
transformers fine-tune: a tiny ``ResNetForImageClassification`` trained on
the demo footwear classes (the ground truth of the timm ``footwear`` model),
cached under ``DOMAIN_FINDER_CACHE`` keyed on this file's source.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from plugin.core.settings import cache_root
from plugin.models.transformers_format import logits_module

PAYLOAD_MARKER_ENV = "DOMAIN_FINDER_PAYLOAD_MARKER"
FOOTWEAR = {5: "Sandal", 7: "Sneaker", 9: "Ankle boot"}  # Fashion-MNIST label -> the name a Trainer user would give
TRAINER_CARD = """---
license: apache-2.0
base_model: {base}
tags:
- generated_from_trainer
datasets:
- {dataset}
metrics:
- accuracy
model-index:
- name: {name}
  results:
  - task:
      name: Image Classification
      type: image-classification
    dataset:
      name: {dataset}
      type: {dataset}
    metrics:
    - name: Accuracy
      type: accuracy
      value: 0.93
---

<!-- This model card has been automatically generated. You should probably proofread and complete it. Then remove this comment. -->

# {name}

This model is a fine-tuned version of [{base}](https://huggingface.co/{base}) on the {dataset} dataset.
It achieves the following results on the evaluation set:
- Loss: 0.2104
- Accuracy: 0.93

## Model description

More information needed

## Intended uses & limitations

More information needed

## Training and evaluation data

More information needed

## Training procedure

### Training hyperparameters

The following hyperparameters were used during training:
- learning_rate: 5e-05
- train_batch_size: 32
- eval_batch_size: 32
- seed: 42
- optimizer: Adam with betas=(0.9,0.999) and epsilon=1e-08
- lr_scheduler_type: linear
- num_epochs: 3

### Framework versions

- Transformers 4.35.2
- Pytorch 2.1.0
- Datasets 2.15.0
- Tokenizers 0.15.0
"""
# A module that announces itself if it is ever imported: remote code must never run.
EVIL_MODULE = """import os, pathlib
_p = os.environ.get({env!r})
if _p:
    pathlib.Path(_p).write_text("remote code ran")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evil-vision"


class EvilForImageClassification(PreTrainedModel):
    config_class = EvilConfig
"""


def trainer_card(name: str, base: str = "google/vit-base-patch16-224-in21k", dataset: str = "imagefolder") -> str:
    """A model card as transformers' Trainer writes it (every section "More information needed")."""
    return TRAINER_CARD.format(name=name, base=base, dataset=dataset)


def tiny_vit(labels: list[str], seed: int = 0, image_size: int = 32):
    """A tiny, randomly initialised ``ViTForImageClassification`` (sizes from transformers' own testers)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, num_labels=len(labels), id2label=dict(enumerate(labels)),
                    label2id={n: i for i, n in enumerate(labels)})
    return ViTForImageClassification(cfg).eval()


def tiny_resnet(labels: list[str], seed: int = 0):
    """A tiny ``ResNetForImageClassification`` (two basic stages, 16 and 32 channels)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
                       downsample_in_first_stage=False, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={n: i for i, n in enumerate(labels)})
    return ResNetForImageClassification(cfg).eval()


def write_transformers_repo(folder: str | Path, model, processor=None, card: str | None = None, *,
                            max_shard_size: str | None = None, pickle: bool = False) -> Path:
    """Writes ``model`` with ``save_pretrained``, its image processor and card.

    ``max_shard_size`` shards the safetensors weights (``model.safetensors.index.json``);
    ``pickle`` writes only a ``pytorch_model.bin`` (a plain state dict), as older repos have.
    """
    import torch
    from transformers import ViTImageProcessor

    folder = Path(folder)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    if pickle:
        for p in folder.glob("model*.safetensors*"):
            p.unlink()
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    size = getattr(model.config, "image_size", 32)
    (processor or ViTImageProcessor(size={"height": size, "width": size})).save_pretrained(folder)
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def write_onnx_repo(folder: str | Path, src: str | Path, model=None) -> Path:
    """Exports the transformers repo ``src`` to ``folder/model.onnx``, with its config and preprocessor config."""
    import torch
    from transformers import AutoModelForImageClassification

    from plugin.models.preprocessing import processor_preprocessing, read_processor_config

    src, folder = Path(src), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model or AutoModelForImageClassification.from_pretrained(src, local_files_only=True).eval()
    pre = processor_preprocessing(read_processor_config(src / "preprocessor_config.json"))

    torch.onnx.export(logits_module(model), torch.zeros(1, *pre.input_size), str(folder / "model.onnx"),
                      input_names=["pixel_values"], output_names=["logits"], dynamo=False,
                      dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(src / name, folder / name)
    return folder


def write_remote_code_repo(folder: str | Path, labels: tuple[str, ...] = ("cat", "dog"),
                           card: str | None = None) -> Path:
    """A repo whose config asks for its own modelling code (``auto_map``), which writes a file if imported."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["EvilForImageClassification"], "model_type": "evil-vision",
           "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                        "AutoModelForImageClassification": "modeling_evil.EvilForImageClassification"},
           "id2label": {str(i): n for i, n in enumerate(labels)}, "label2id": {n: i for i, n in enumerate(labels)}}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for name in ("modeling_evil.py", "configuration_evil.py"):
        (folder / name).write_text(EVIL_MODULE.format(env=PAYLOAD_MARKER_ENV))
    save_file({k: v.contiguous() for k, v in tiny_vit(list(labels)).state_dict().items()},
              str(folder / "model.safetensors"))
    (folder / "README.md").write_text(card if card is not None else trainer_card(folder.name))
    return folder


UNSUPPORTED_FILES = {  # format -> (file name, bytes): what the Hub also holds
    "keras": ("model.keras", b"PK\x03\x04 not really a keras archive"),
    "fastai": ("export.pkl", b"\x80\x04K\x01."),
    "pytorch-pickle": ("model.pt", b"PK\x03\x04 a raw torch pickle"),
}


def write_unsupported_repo(folder: str | Path, fmt: str) -> Path:
    """A classifier repo in a format no loader of ours reads, tagged for image classification by its card."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name, data = UNSUPPORTED_FILES[fmt]
    (folder / name).write_bytes(data)
    (folder / "README.md").write_text(f"---\nlibrary_name: {fmt.split('-')[0]}\npipeline_tag: image-classification\n"
                                      f"---\n")
    return folder


# -- the demo's transformers fine-tune, trained on the footwear classes --------
def _key() -> str:
    """Changes with the training recipe (its functions' source) and the library versions, nothing else."""
    import inspect

    import torch
    import transformers

    src = "".join(inspect.getsource(f) for f in (footwear_finetune, tiny_resnet, write_transformers_repo))
    return hashlib.sha256((src + repr(FOOTWEAR) + torch.__version__ + transformers.__version__).encode()).hexdigest()[:12]


def footwear_finetune(progress: bool = True) -> Path:
    """The trained transformers footwear classifier (a repo folder without a card), built once and cached.

    Trains on the Fashion-MNIST train split minus its last 10,000 images, as
    the timm demo models do, so it has the ground truth of ``footwear``:
    sandal, sneaker, ankle boot, in that order.
    """
    import torch
    from transformers import ConvNextImageProcessor

    from plugin.demo.corpus import fashion_mnist
    from plugin.models.preprocessing import processor_preprocessing
    from plugin.models.training import fit

    out = cache_root() / "demo-transformers" / _key() / "footwear"
    if (out / "config.json").is_file():
        return out
    t0 = time.time()
    x, y = fashion_mnist("train")
    # The first 2,000 training images per class (the last 10,000 are held out, as for the timm demo models).
    train = np.concatenate([np.flatnonzero((y == c) & (np.arange(len(y)) < len(y) - 10_000))[:2000] for c in FOOTWEAR])
    remap = {c: i for i, c in enumerate(FOOTWEAR)}
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0, image_mean=[0.5] * 3,
                                       image_std=[0.5] * 3, resample=2)
    pre = processor_preprocessing(processor.to_dict())
    X = pre(list(x[train]))
    Y = torch.tensor([remap[int(v)] for v in y[train]])
    model = tiny_resnet(list(FOOTWEAR.values()), seed=0)
    fit(logits_module(model), X, Y, epochs=3, batch_size=128, lr=3e-3, shift=3, rng=np.random.default_rng(0))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_transformers_repo(tmp, model.eval(), processor)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    if progress:
        print(f"trained the transformers footwear fine-tune in {time.time() - t0:.0f} s", flush=True)
    return out
