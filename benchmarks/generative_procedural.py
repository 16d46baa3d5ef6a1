"""Method 1's accuracy on a procedural world whose ground truth is known (no weights, no GPU needed).

Text space: prompts "a COLOUR PATTERN SHAPE" (4 colours x 4 patterns x 3 shapes). The generator's conditioning
and the encoder's text vector are the prompt's attribute one-hots; an embedding (a mix of prompts) is sampled
attribute by attribute, with probability proportional to its weight, and rendered deterministically per seed
(32 px, jittered position and size). The encoder measures the same attributes from the pixels (foreground colour,
fill ratio of the bounding box, the pattern's rows). Small CNNs are trained on parts of that space (a class =
one colour and one shape, any pattern) and used as hard-label black boxes.

For every class, Method 1 starts from prompts that are wrong (the corpus "cannot cover" the class: random prompts
that share its colour or its shape, never both), and a random-search baseline spends the same queries on uniformly
random prompts (the mean of --baseline-draws draws, each with its own generator, so that the warm starts never
depend on it). A class is recovered when the best kept embedding's heaviest colour and shape are the class's; a
miss is diagnosed on fresh samples (how often the model labels the found region, and the class's true region, as
the class).

    .venv/bin/python benchmarks/generative_procedural.py               # 8 models x 4 classes, seeds 0-7
    .venv/bin/python benchmarks/generative_procedural.py --runs 1 --set rounds=6
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a bare checkout too

import numpy as np  # noqa: E402

from plugin.core.blackbox import CountingBlackBox  # noqa: E402
from plugin.generative import GenerativeConfig, Prompt, search_class  # noqa: E402
from plugin.generative.search import PromptBank, objective_terms  # noqa: E402

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230), "yellow": (230, 220, 40),
           "magenta": (220, 50, 220), "cyan": (40, 210, 220), "orange": (240, 140, 30), "white": (245, 245, 245)}
PATTERNS = ("plain", "stripes", "checks", "dots")
SHAPES = ("circle", "square", "triangle")
GROUPS = (tuple(COLOURS), PATTERNS, SHAPES)
DIM = sum(len(g) for g in GROUPS)
SIZE = 32


def one_hot(colour: str, pattern: str, shape: str) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    off = 0
    for group, value in zip(GROUPS, (colour, pattern, shape)):
        v[off + group.index(value)] = 1.0
        off += len(group)
    return v


def parse(text: str) -> tuple[str, str, str]:
    words = text.split()
    return words[1], words[2], words[3]


def prompt(colour, pattern, shape, origin="warm") -> Prompt:
    text = f"a {colour} {pattern} {shape}"
    return Prompt(text, text, origin)


def render(colour: str, pattern: str, shape: str, rng: np.random.Generator) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), 128, np.int16) + rng.integers(-6, 7, (SIZE, SIZE, 3))
    r = int(rng.integers(8, 12))
    cy, cx = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        mask = dy ** 2 + dx ** 2 <= r ** 2
    elif shape == "square":
        mask = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    else:
        mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.5)
    bright = {"plain": np.ones_like(mask), "stripes": (yy // 2) % 2 == 0, "checks": ((yy // 2) + (xx // 2)) % 2 == 0,
              "dots": (yy % 4 < 2) & (xx % 4 < 2)}[pattern]
    base = np.array(COLOURS[colour], np.int16)
    img[mask & bright] = base
    img[mask & ~bright] = (base * 0.35).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def measure(img: np.ndarray) -> np.ndarray:
    """The attributes read back from pixels, as the same one-hots as the text."""
    x = img.astype(np.float32)
    fg = np.abs(x - 128).max(-1) > 30
    if fg.sum() < 4:
        return np.zeros(DIM, np.float32)
    bright = fg & (x.max(-1) > 150)
    mean = x[bright].mean(0) if bright.any() else x[fg].mean(0)
    colour = min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(COLOURS[c])))
    ys, xs = np.nonzero(fg)
    box = fg[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    fill = box.mean()
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    share = bright.sum() / fg.sum()
    rows = bright[ys.min(): ys.max() + 1].sum(1) / np.maximum(1, fg[ys.min(): ys.max() + 1].sum(1))
    if share > 0.85:
        pattern = "plain"
    elif share < 0.35:
        pattern = "dots"
    else:
        pattern = "stripes" if np.std(rows) > 0.3 else "checks"
    return one_hot(colour, pattern, shape)


class ProceduralGenerator:
    def encode_prompts(self, prompts):
        return np.stack([one_hot(*parse(p)) for p in prompts])

    def generate(self, embeddings, seeds):
        out = np.zeros((len(embeddings), len(seeds), SIZE, SIZE, 3), np.uint8)
        for i, e in enumerate(np.asarray(embeddings, np.float64)):
            for j, s in enumerate(seeds):
                rng = np.random.default_rng([int(s), 7])
                picks, off = [], 0
                for group in GROUPS:
                    w = np.maximum(e[off: off + len(group)], 0)
                    off += len(group)
                    p = w / w.sum() if w.sum() > 0 else np.full(len(group), 1 / len(group))
                    picks.append(group[int(rng.choice(len(group), p=p))])
                out[i, j] = render(*picks, rng)
        return out


class ProceduralEncoder:
    def encode_text(self, prompts):
        return np.stack([one_hot(*parse(p)) for p in prompts])

    def encode_images(self, images):
        return np.stack([measure(im) for im in images])


class CNNBlackBox(CountingBlackBox):
    def __init__(self, net, num_classes):
        super().__init__(num_classes=num_classes)
        self.net = net

    def _predict(self, images):
        import torch

        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.inference_mode():
            return self.net(x).argmax(1).numpy()


def train_model(classes: list[tuple[str, str]], seed: int, per_class: int = 300, epochs: int = 6) -> CNNBlackBox:
    """A small CNN on (colour, shape) classes, any pattern, and a last class "other" for the rest of the space
    (without it every image is some class, and a class's preimage is far wider than what it was trained on)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    rest = [pair for pair in itertools.product(COLOURS, SHAPES) if pair not in classes]
    for label, (colour, shape) in enumerate(classes):
        for k in range(per_class):
            xs.append(render(colour, PATTERNS[int(rng.integers(len(PATTERNS)))], shape, rng))
            ys.append(label)
            other = rest[int(rng.integers(len(rest)))]
            xs.append(render(other[0], PATTERNS[int(rng.integers(len(PATTERNS)))], other[1], rng))
            ys.append(len(classes))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.tensor(ys)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, len(classes) + 1))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return CNNBlackBox(net.eval(), len(classes) + 1)


def neighbours(p: Prompt) -> list[Prompt]:
    """Prompt edits: one attribute word changed (the procedural world's WordNet neighbours)."""
    words = list(parse(p.text))
    out = []
    for g, group in enumerate(GROUPS):
        for value in group:
            if value != words[g]:
                edited = words.copy()
                edited[g] = value
                out.append(prompt(*edited, origin="edit"))
    return out


ALL_PROMPTS = [prompt(c, p, s) for c, p, s in itertools.product(COLOURS, PATTERNS, SHAPES)]


def recovered(weights: tuple[tuple[int, float], ...], bank: list[Prompt], truth: tuple[str, str]) -> bool:
    e = sum(w * one_hot(*parse(bank[j].text)) for j, w in weights)
    colour = tuple(COLOURS)[int(np.argmax(e[: len(COLOURS)]))]
    shape = SHAPES[int(np.argmax(e[len(COLOURS) + len(PATTERNS):]))]
    return (colour, shape) == truth


def random_search(target, bb, gen, enc, config, budget, rng):
    """The baseline: the same queries on uniformly random prompts, the best by the same objective."""
    n = max(1, budget // config.seeds)
    picks = [ALL_PROMPTS[int(i)] for i in rng.choice(len(ALL_PROMPTS), size=n, replace=False)]
    bank = PromptBank(gen, enc)
    bank.add(picks)
    seeds = tuple(config.seed * 100_003 + j for j in range(config.seeds))
    best, best_obj = None, -np.inf
    for j, p in enumerate(picks):
        w = np.eye(len(bank))[j]
        images = gen.generate(bank.conditioning(w[None]), seeds)[0]
        labels = bb.predict(list(images))
        _, _, obj = objective_terms(images, labels, target, enc.encode_images(images), bank.text(w[None])[0],
                                    config.lam)
        if obj > best_obj:
            best, best_obj = ((j, 1.0),), obj
    return best, bank.prompts


DIAG = 64  # fresh samples per region for the diagnosis of a miss (not part of any search's queries)


def model_rates(bb, gen, res, target: int, truth: tuple[str, str]) -> tuple[float, float]:
    """How often the model labels fresh samples of the best kept embedding, and of the class's true region
    (its colour and shape, any pattern), as the class: a diagnosis of a miss, outside the search's budget."""
    seeds = list(range(10_000, 10_000 + DIAG))
    found = gen.generate(res.embeddings[:1], seeds)[0]
    rng = np.random.default_rng(10_000)
    true = [render(truth[0], PATTERNS[int(rng.integers(len(PATTERNS)))], truth[1], rng) for _ in seeds]
    return (float(np.mean(np.asarray(bb.predict(list(found))) == target)),
            float(np.mean(np.asarray(bb.predict(true)) == target)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8, help="models (each with its own classes and seed)")
    ap.add_argument("--first-model", type=int, default=0, help="seed of the first model (8 for a held-out set)")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--baseline-draws", type=int, default=5, help="random-search draws per class (their mean)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a GenerativeConfig field")
    args = ap.parse_args(argv)
    import torch
    import yaml

    torch.set_num_threads(1)
    config = GenerativeConfig.from_options({"k": 3, "pool": 8, "rounds": 5, "seeds": 8, "lam": 0.3,
                                            "start_prompts": 4,
                                            **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}})
    gen, enc = ProceduralGenerator(), ProceduralEncoder()
    m1 = base = total = queries = ambiguous = 0
    t0 = time.perf_counter()
    for run in range(args.first_model, args.first_model + args.runs):
        rng = np.random.default_rng(run)
        pairs = list(itertools.product(COLOURS, SHAPES))
        classes = [pairs[int(i)] for i in rng.choice(len(pairs), size=args.classes, replace=False)]
        bb = train_model(classes, seed=run)
        for target, truth in enumerate(classes):
            # The corpus cannot cover the class, only its neighbourhood: the warm start shares its colour or its
            # shape, never both (the corpus search's weak guesses are near misses of that kind).
            wrong = [p for p in ALL_PROMPTS if (parse(p.text)[0] == truth[0]) != (parse(p.text)[2] == truth[1])]
            start = [wrong[int(i)] for i in rng.choice(len(wrong), size=config.start_prompts, replace=False)]
            res = search_class(target, start, gen, enc, bb.predict, config.replace(seed=run), neighbours)
            ok = recovered(res.kept[0].weights, list(res.prompts), truth)
            # Random search is itself a random variable: its mean over --baseline-draws draws, each with its own
            # generator (the warm starts of later classes must not depend on how many prompts it drew).
            ok_base = float(np.mean([recovered(*random_search(target, bb, gen, enc, config.replace(seed=run),
                                                              res.queries, np.random.default_rng([run, target, d])),
                                               truth) for d in range(args.baseline_draws)]))
            m1, base, total, queries = m1 + ok, base + ok_base, total + 1, queries + res.queries
            why = ""
            if not ok:  # a miss: is it the search, or a region the model itself labels as the class?
                found_rate, true_rate = model_rates(bb, gen, res, target, truth)
                ambiguous += found_rate >= true_rate
                why = (f"; the model labels the found region as the class in {found_rate:.0%} of {DIAG} fresh "
                       f"samples, its true region in {true_rate:.0%}")
            print(f"model {run} class {target} {truth[0]} {truth[1]}: method 1 {'yes' if ok else 'no '} "
                  f"({res.nearest[0][0]}, relevance {res.relevance:.2f}, {res.queries} queries); "
                  f"random {ok_base:.0%} of draws{why}")
    print(f"recovered: method 1 {m1}/{total} ({m1 / total:.0%}), random search {base:.1f}/{total} "
          f"({base / total:.0%}, mean of {args.baseline_draws} draws per class) "
          f"at the same queries ({queries / total:.0f} per class); {time.perf_counter() - t0:.0f} s")
    print(f"misses whose found region the model labels as the class at least as often as the class's true region: "
          f"{ambiguous}/{total - m1} (hard labels cannot tell those regions apart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
