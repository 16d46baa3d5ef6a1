"""Method 1's search (MM'24 talk, "Method 1 (Generative)"): pure numpy behind the two protocols.

For class ``i`` it looks for a set ``E`` of ``k`` text-space embeddings that
maximises ``lam * generality + relevance``, where for one embedding ``e``

* generality ``= -E_s[cos(Enc(Dec(e; s)), e)]`` (its samples spread away from
  the text; measured in the encoder's joint space), and
* relevance ``= Pr_s[argmax M(Dec(e; s)) = i]`` (the hard-label black box;
  every sample is one counted query).

An embedding is an affine combination of encoded prompts (a :class:`PromptBank`):
its conditioning is that combination of the prompts' conditionings, and its
text vector in the joint space the same combination of their text vectors.
That keeps both spaces in step under the talk's "manipulation in text space":
interpolation of two kept embeddings, perturbation of one, and prompt edits
that swap a prompt for a WordNet neighbour. Each round keeps the top ``k``.
Every candidate is scored on the same seeds, so candidates differ by their
embedding only (common random numbers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from plugin.generative.config import GenerativeConfig
from plugin.generative.protocols import Encoder, Generator

Labeller = Callable[[list], np.ndarray]  # images -> hard labels; the black box's predict (counts queries)


@dataclass(frozen=True)
class Prompt:
    """A text the search may condition on, with the WordNet synset it was drawn from."""

    text: str
    synset: str = ""
    origin: str = "warm"  # warm | edit

    def to_dict(self) -> dict:
        return {"text": self.text, "synset": self.synset, "origin": self.origin}


class PromptBank:
    """The prompts met so far, encoded once each in both spaces."""

    def __init__(self, generator: Generator, encoder: Encoder):
        self.generator, self.encoder = generator, encoder
        self.prompts: list[Prompt] = []
        self._cond: list[np.ndarray] = []
        self._text: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.prompts)

    def add(self, prompts: Sequence[Prompt]) -> list[int]:
        """Encodes the new prompts (a known text is not added twice); their bank indices."""
        known = {p.text: j for j, p in enumerate(self.prompts)}
        new = [p for p in dict((p.text, p) for p in prompts).values() if p.text not in known]
        if new:
            texts = [p.text for p in new]
            cond = np.asarray(self.generator.encode_prompts(texts), dtype=np.float32)
            text = _unit(np.asarray(self.encoder.encode_text(texts), dtype=np.float32))
            for p, c, t in zip(new, cond, text):
                known[p.text] = len(self.prompts)
                self.prompts.append(p)
                self._cond.append(c)
                self._text.append(t)
        return [known[p.text] for p in prompts]

    def conditioning(self, weights: np.ndarray) -> np.ndarray:
        """The generator's input for each row of ``weights`` ``(n, len(bank))``."""
        return np.tensordot(weights, np.stack(self._cond), axes=1).astype(np.float32)

    def text(self, weights: np.ndarray) -> np.ndarray:
        """Unit text vectors in the encoder's space for each row of ``weights``."""
        return _unit(weights @ np.stack(self._text))

    def nearest(self, vectors: np.ndarray, n: int = 3) -> list[tuple[str, ...]]:
        """The ``n`` bank prompts closest (cosine, joint space) to each unit vector."""
        sims = vectors @ np.stack(self._text).T
        return [tuple(self.prompts[j].text for j in np.argsort(-row, kind="stable")[:n]) for row in sims]


@dataclass(frozen=True)
class Scored:
    """One candidate embedding (its prompt weights) and both terms of its objective."""

    weights: tuple[tuple[int, float], ...]  # (bank index, weight), the weights sum to 1
    origin: str  # warm | interpolate | perturb | edit
    relevance: float
    generality: float
    objective: float

    def dense(self, n: int) -> np.ndarray:
        return _dense(self.weights, n)


@dataclass(frozen=True)
class ClassResult:
    """What the search kept for one class: a generative model of its domain."""

    index: int
    kept: tuple[Scored, ...]  # best first
    prompts: tuple[Prompt, ...]  # the bank the weights index
    embeddings: np.ndarray = field(compare=False, repr=False)  # (k, *shape): what the generator conditions on
    text: np.ndarray = field(compare=False, repr=False)  # (k, d) unit vectors in the encoder's space
    nearest: tuple[tuple[str, ...], ...]  # per kept embedding, its nearest prompts
    seeds: tuple[int, ...]  # the seeds every candidate was scored on
    relevance: float  # of the kept set: Pr over its embeddings and the seeds
    generality: float
    objective: float
    queries: int
    evaluated: int  # candidates scored
    rounds: int  # expansion rounds done
    stopped: str  # rounds | budget | no-prompts
    history: tuple[float, ...] = ()  # the kept set's objective after the warm start and each round

    def to_dict(self) -> dict:
        return {"index": self.index, "relevance": round(self.relevance, 6), "generality": round(self.generality, 6),
                "objective": round(self.objective, 6), "queries": self.queries, "evaluated": self.evaluated,
                "rounds": self.rounds, "stopped": self.stopped, "seeds": list(self.seeds),
                "history": [round(h, 6) for h in self.history],
                "embeddings": [{"nearest_prompts": list(n), "origin": s.origin, "relevance": round(s.relevance, 6),
                                "generality": round(s.generality, 6), "objective": round(s.objective, 6),
                                "weights": {self.prompts[j].text: round(w, 6) for j, w in s.weights}}
                               for s, n in zip(self.kept, self.nearest)]}


def objective_terms(images: np.ndarray, labels: np.ndarray, target: int, image_vectors: np.ndarray,
                    text_vector: np.ndarray, lam: float) -> tuple[float, float, float]:
    """(relevance, generality, objective) of one embedding from its samples' labels and image vectors."""
    relevance = float(np.mean(np.asarray(labels) == target)) if len(images) else 0.0
    generality = -float(np.mean(_unit(image_vectors) @ text_vector)) if len(images) else 0.0
    return relevance, generality, lam * generality + relevance


def search_class(target: int, start: Sequence[Prompt], generator: Generator, encoder: Encoder,
                 label: Labeller, config: GenerativeConfig,
                 neighbours: Callable[[Prompt], Sequence[Prompt]] | None = None,
                 budget: int | None = None) -> ClassResult:
    """Runs the iterative top-k search for class ``target``, warm-started from ``start``.

    Args:
        label: the black box's hard labels for a list of images; each image is one query.
        neighbours: prompt edits (WordNet neighbours of a prompt); none without it.
        budget: the most queries this class may spend (besides ``config.queries_per_class``);
            the search stops before a batch that would pass it, never inside one.
    """
    rng = np.random.default_rng([config.seed, target])
    seeds = tuple(config.seed * 100_003 + j for j in range(config.seeds))
    cap = config.queries_per_class if budget is None else min(budget, config.queries_per_class)
    bank = PromptBank(generator, encoder)
    state = _State(target, bank, generator, encoder, label, config, seeds, cap)
    starts = list(dict((p.text, p) for p in start).values())[: config.start_prompts]
    if not starts:
        return state.result([], 0, "no-prompts", [])
    idx = bank.add(starts)
    scored = state.score([((j, 1.0),) for j in idx], ["warm"] * len(idx))
    kept = _top(scored, config.k)
    history = [_set_objective(kept, config.lam)] if kept else []
    done, stopped = 0, "rounds"
    for _ in range(config.rounds):
        if state.spent + config.seeds > cap:
            stopped = "budget"
            break
        guide = _unit(state.hits) if state.hits.size else None
        fresh = _expand(kept, bank, config, rng, neighbours, config.pool - len(kept), state.seen, guide)
        if not fresh:
            break
        new = state.score([w for w, _ in fresh], [o for _, o in fresh])
        if len(new) < len(fresh):
            stopped = "budget"
        kept = _top([*kept, *new], config.k)
        done += 1
        history.append(_set_objective(kept, config.lam))
        if stopped == "budget":
            break
    if stopped == "rounds" and done < config.rounds and state.spent + config.seeds > cap:
        stopped = "budget"
    return state.result(kept, done, stopped, history)


class _State:
    """One class's search: the bank, the seeds, the queries spent and every weight vector scored."""

    def __init__(self, target, bank, generator, encoder, label, config, seeds, cap):
        self.target, self.bank, self.generator, self.encoder, self.label = target, bank, generator, encoder, label
        self.config, self.seeds, self.cap = config, seeds, cap
        self.spent = self.evaluated = 0
        self.seen: set = set()
        self.hits = np.zeros(0, np.float32)  # the sum of the unit image vectors of every sample labelled target

    def score(self, weights: list[tuple[tuple[int, float], ...]], origins: list[str]) -> list[Scored]:
        """Scores as many candidates as the budget allows, in one generator and one black-box batch."""
        room = max(0, (self.cap - self.spent) // len(self.seeds))
        weights, origins = weights[:room], origins[:room]
        if not weights:
            return []
        self.seen.update(_key(w) for w in weights)
        dense = np.stack([_dense(w, len(self.bank)) for w in weights])
        text = self.bank.text(dense)
        images = np.asarray(self.generator.generate(self.bank.conditioning(dense), self.seeds))
        flat = list(images.reshape(-1, *images.shape[2:]))
        labels = np.asarray(self.label(flat)).reshape(len(weights), len(self.seeds))
        self.spent += len(flat)
        self.evaluated += len(weights)
        vecs = np.asarray(self.encoder.encode_images(images.reshape(-1, *images.shape[2:])), np.float32)
        vecs = vecs.reshape(len(weights), len(self.seeds), -1)
        positive = _unit(vecs[labels == self.target])
        if len(positive):
            self.hits = positive.sum(0) + (self.hits if self.hits.size else 0)
        out = []
        for w, o, im, lab, v, t in zip(weights, origins, images, labels, vecs, text):
            out.append(Scored(w, o, *objective_terms(im, lab, self.target, v, t, self.config.lam)))
        return out

    def result(self, kept: list[Scored], rounds: int, stopped: str, history: list[float]) -> ClassResult:
        if kept:
            dense = np.stack([s.dense(len(self.bank)) for s in kept])
            emb, text = self.bank.conditioning(dense), self.bank.text(dense)
        else:
            emb, text = np.zeros((0,), np.float32), np.zeros((0, 0), np.float32)
        rel = float(np.mean([s.relevance for s in kept])) if kept else 0.0
        gen = float(np.mean([s.generality for s in kept])) if kept else 0.0
        return ClassResult(self.target, tuple(kept), tuple(self.bank.prompts), emb, text,
                           tuple(self.bank.nearest(text)) if kept else (), self.seeds, rel, gen,
                           self.config.lam * gen + rel, self.spent, self.evaluated, rounds, stopped, tuple(history))


def _expand(kept: list[Scored], bank: PromptBank, config: GenerativeConfig, rng: np.random.Generator,
            neighbours, n_new: int, seen: set, guide: np.ndarray | None = None
            ) -> list[tuple[tuple[tuple[int, float], ...], str]]:
    """``n_new`` unseen candidates from the kept ones: interpolations, perturbations, prompt edits.

    ``guide``: the mean image vector of the samples the model labelled as the class so far, if any.
    """
    n_interp = int(round(config.interpolate * n_new)) if len(kept) > 1 else 0
    n_perturb = int(round(config.perturb * n_new))
    if neighbours is not None and not any(s.relevance > 0 for s in kept):
        # No kept embedding is ever labelled i: mixing or shaking them explores nothing the model responds to,
        # so the whole round goes to new text (prompt edits; perturbation only where no neighbour is left).
        n_interp = n_perturb = 0
    plan = ["interpolate"] * n_interp + ["perturb"] * n_perturb
    plan += ["edit"] * max(0, n_new - len(plan))
    out, keys, tries = [], set(seen), 0
    while len(out) < n_new and tries < 4 * n_new + 8:
        op = plan[min(len(out), len(plan) - 1)] if tries < 2 * n_new else "perturb"
        tries += 1
        w = _make(op, kept, bank, config, rng, neighbours, len(out), guide)
        if w is None:
            plan[min(len(out), len(plan) - 1)] = "perturb"  # no neighbour left: explore by perturbation instead
            continue
        key = _key(w)
        if key not in keys:
            keys.add(key)
            out.append((w, op))
    return out


def _make(op: str, kept: list[Scored], bank: PromptBank, config: GenerativeConfig, rng: np.random.Generator,
          neighbours, slot: int, guide: np.ndarray | None = None):
    n = len(bank)
    if op == "interpolate":
        a, b = rng.choice(len(kept), size=2, replace=False)
        t = rng.uniform(0.25, 0.75)
        return _sparse((1 - t) * kept[a].dense(n) + t * kept[b].dense(n))
    if op == "perturb":
        parent = kept[slot % len(kept)]
        w = parent.dense(n)
        # Noise on the parent's own prompts and on two other prompts of the bank: exploration stays near the text
        # that already works, and can mix in what the bank has learned.
        support = {j for j, _ in parent.weights} | set(rng.choice(n, size=min(2, n), replace=False).tolist())
        for j in support:
            w[j] += rng.normal(0.0, config.perturb_scale)
        total = w.sum()
        return _sparse(w / total) if abs(total) > 1e-3 else None
    # A prompt edit: one prompt of a kept embedding gives its weight to one of its WordNet neighbours. The
    # first kept embedding from this slot on, and its heaviest prompt, that still has an unseen neighbour.
    if neighbours is None:
        return None
    known = {q.text for q in bank.prompts}
    for step in range(len(kept)):
        parent = kept[(slot + step) % len(kept)]
        for top, _ in sorted(parent.weights, key=lambda jw: -abs(jw[1])):
            options = [p for p in neighbours(bank.prompts[top]) if p.text not in known]
            if options:
                pick = options[_pick(options, bank, rng, guide)]
                (j,) = bank.add([pick])
                w = np.zeros(len(bank))
                w[:n] = parent.dense(n)
                w[j], w[top] = w[j] + w[top], 0.0
                return _sparse(w)
    return None


def _pick(options: list[Prompt], bank: PromptBank, rng: np.random.Generator, guide: np.ndarray | None) -> int:
    """Which neighbour an edit takes: the one whose text is closest to what the model labelled as the class (the
    positives' mean image vector in the joint space), or a random one before the model has labelled any sample
    so. (Picking the neighbour least like the prompts tried so far instead did no better on the procedural
    benchmark: 20/32 either way.)"""
    if guide is None or len(options) == 1:
        return int(rng.integers(len(options)))
    text = _unit(np.asarray(bank.encoder.encode_text([o.text for o in options]), np.float32))
    return int(np.argmax(text @ guide))


def _dense(weights: tuple[tuple[int, float], ...], n: int) -> np.ndarray:
    w = np.zeros(n, np.float64)
    for j, v in weights:
        w[j] = v
    return w


def _sparse(w: np.ndarray) -> tuple[tuple[int, float], ...]:
    return tuple((int(j), float(w[j])) for j in np.flatnonzero(np.abs(w) > 1e-9))


def _key(weights: tuple[tuple[int, float], ...]) -> tuple:
    return tuple((j, round(v, 6)) for j, v in weights)


def _top(scored: list[Scored], k: int) -> list[Scored]:
    return sorted(scored, key=lambda s: -s.objective)[:k]  # stable: ties keep the earlier (warm) candidate


def _set_objective(kept: list[Scored], lam: float) -> float:
    return lam * float(np.mean([s.generality for s in kept])) + float(np.mean([s.relevance for s in kept]))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
