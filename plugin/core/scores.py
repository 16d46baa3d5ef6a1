"""Step 1 of the search: functional scores ``l(i, j)`` from a pass of queries.

Sees only a :class:`~plugin.core.blackbox.BlackBox` and a
:class:`~plugin.core.corpus.Corpus`. Two passes share one streaming pipeline:

* **exhaustive**: ``images_per_leaf`` images (x copies) to every leaf;
* **adaptive** (the default): rounds of images per leaf, growing by
  ``adaptive_growth`` up to the cap. After each round a leaf closes once a
  confidence bound (``adaptive_z``) decides, for every class, that it cannot
  be a candidate (its upper bound is below the rate a candidate needs at full
  capacity, or ``top_k`` other leaves are surely better) or that it surely is
  one whose score is known to ``adaptive_precision``. The bounds count copies
  by how alike the black box labels them (Kish's design effect). Successive
  halving of the undecided leaves is an opt-in budget device.

Images stream through in chunks: a thread prefetches the next leaves' images
(decoding a lazy corpus) while the current chunk is expanded and queried, so
memory is bounded by a chunk, not by the corpus.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Callable, Iterator

import numpy as np

from plugin.core.blackbox import BlackBox, TensorBlackBox
from plugin.core.corpus import Corpus, LazyImages
from plugin.core.recipe import Recipe
from plugin.core.settings import io_threads
from plugin.core.transforms import expand_leaf, expand_to_input, resized_alone

Progress = Callable[[int], None]  # called with the number of queries just made
# The settle check (the search passes it): on the pass so far, the leaves whose answer is still unstable
# (those in contention for an unstable class), and how many classes are unstable.
Settle = Callable[["ScorePass"], tuple[np.ndarray, int]]
CHUNK = 512  # raw images expanded ahead of the black box
CHUNK_PIXELS = 40_000_000  # model-input values per chunk on CPU (about 160 MB of float32)
PREFETCH = 2  # jobs fetched (decoded) ahead of the device, per fetch thread


@dataclass
class ScorePass:
    """The result of the pass over the corpus (step 1).

    Attributes:
        counts: ``(num_classes, num_leaves)`` copies of leaf j labelled i.
        totals: copies sent per leaf.
        n_images: distinct images sent per leaf (the evidence behind a score).
        labels: per leaf, an ``(n_images, copies)`` array of hard labels.
        capacity: images each leaf could supply (``min(len(leaf), images_per_leaf)``);
            equal to ``n_images`` after an exhaustive pass.
        exhaustive_queries: what an exhaustive pass would have spent.
        rounds: per round of the adaptive pass, the open leaves and queries spent.
    """

    leaves: list[str]
    counts: np.ndarray
    totals: np.ndarray
    n_images: np.ndarray
    labels: list[np.ndarray]
    queries: int
    seconds: float
    capacity: np.ndarray | None = None
    exhaustive_queries: int | None = None
    rounds: list[dict] = field(default_factory=list)
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # derived matrices, by kind

    def __post_init__(self):
        if self.capacity is None:
            self.capacity = np.asarray(self.n_images).copy()
        if self.exhaustive_queries is None:
            self.exhaustive_queries = int(np.asarray(self.totals).sum())

    @property
    def support(self) -> np.ndarray:
        """Images per leaf behind its support-adjusted score: what the leaf can supply.

        The adjustment is about a leaf's size (METHOD.md, "Generality": small
        leaves are weak evidence), not about how many images the adaptive pass
        needed: a candidate leaf stops only once its score is measured to
        ``adaptive_precision``, and a leaf that stopped as no candidate is
        below the rate a candidate needs even at full capacity. Equal to
        ``n_images`` after an exhaustive pass.
        """
        return self.capacity

    @cached_property
    def takers(self) -> np.ndarray:
        """Per leaf, the class taking most of its copies (-1 for a leaf none of whose copies came back as a class)."""
        counts = np.asarray(self.counts)
        return np.where(counts.sum(axis=0) > 0, counts.argmax(axis=0), -1)

    @cached_property
    def hits_at_capacity(self) -> np.ndarray:
        """``counts`` scaled to what each leaf can supply: the hits a full pass would expect.

        The open-world guess ranks leaves by their share of a class's hits.
        After an adaptive pass a leaf that stopped early holds fewer raw hits
        at the same rate, and a leaf refined to full capacity would win on
        volume alone. Equal to ``counts`` after an exhaustive pass.
        """
        n = np.asarray(self.n_images, dtype=float)
        scale = np.where(n > 0, np.asarray(self.capacity, dtype=float) / np.maximum(n, 1), 0.0)
        return self.counts * scale[None, :]

    @cached_property
    def scores(self) -> np.ndarray:
        """The functional-score matrix ``l(i, j)`` (computed once; a 1,000-class pass asks per class)."""
        return self.counts / np.maximum(self.totals, 1)[None, :]

    def ranked(self, z: float) -> tuple[np.ndarray, np.ndarray]:
        """The support-adjusted scores (Wilson bound at ``z``) and, per class, the leaves best first.

        Ties in the adjusted score go to the raw score. Computed for every class
        at once and kept: steps 2-4 ask per class, several times a pass.
        """
        key = ("ranked", z)
        if key not in self._memo:
            adjusted = wilson_lower_bound(self.scores, np.asarray(self.support)[None, :], z)
            self._memo[key] = (adjusted, np.lexsort((-self.scores, -adjusted), axis=-1))
        return self._memo[key]

    def supply(self, i: int, members, recipe: Recipe) -> float:
        """Filtered images class ``i`` could get from ``members`` at full capacity.

        The filtered rate observed on the images sent, times the images each
        leaf can supply: after an adaptive pass a leaf that stopped early
        because it surely is a candidate is judged on what it would give, not
        on what it was asked. After an exhaustive pass this is the filtered count.
        """
        return float(self.filtered_at_capacity(recipe)[i, list(members)].sum())

    def filtered_at_capacity(self, recipe: Recipe) -> np.ndarray:
        """``(classes, leaves)``: per leaf, the images filtered to each class, scaled to its capacity.

        Computed once per pass (the clustering asks for it per candidate
        cluster, and relabelling every member leaf each time was most of a
        10-class model's clustering).
        """
        key = ("filtered", recipe.include_original)
        if key not in self._memo:
            out = np.zeros(self.counts.shape, dtype=float)
            for j, labels in enumerate(self.labels):
                lab = image_labels(labels, recipe)
                if len(lab):
                    known = lab[(lab >= 0) & (lab < out.shape[0])]  # a label outside the classes counts for none
                    hist = np.bincount(known, minlength=out.shape[0])
                    out[:, j] = hist * float(self.capacity[j]) / len(lab)
            self._memo[key] = out
        return self._memo[key]


def wilson_lower_bound(p: np.ndarray | float, n: np.ndarray | float, z: float) -> np.ndarray:
    """Lower confidence bound of a proportion observed on ``n`` images.

    Copies of one image are strongly correlated, so ``n`` is the number of
    distinct images: a one-image leaf at 1.0 is weak evidence (METHOD.md,
    "Generality"), a 50-image leaf at 0.9 is strong.
    """
    p = np.asarray(p, dtype=float)
    n = np.maximum(np.asarray(n, dtype=float), 1e-9)
    if z <= 0:
        return p
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(np.maximum(p * (1 - p) / n + z * z / (4 * n * n), 0))
    return np.clip((centre - margin) / denom, 0.0, 1.0)


def wilson_upper_bound(p: np.ndarray | float, n: np.ndarray | float, z: float) -> np.ndarray:
    """Upper confidence bound, the mirror of :func:`wilson_lower_bound`."""
    return 1.0 - wilson_lower_bound(1.0 - np.asarray(p, dtype=float), n, z)


# -- the streaming pipeline ------------------------------------------------------
Job = tuple[int, int, int]  # (leaf index, first image, stop image)


def _seed(recipe: Recipe, j: int) -> int:
    """Leaf ``j``'s stream of copies (:func:`~plugin.core.transforms.image_draws`): one per leaf, not per job."""
    return recipe.seed * 1_000_003 + j


class _Pipeline:
    """Streams jobs through expansion and the black box, one bounded chunk at a time."""

    def __init__(self, blackbox: BlackBox, corpus: Corpus, recipe: Recipe, progress: Progress | None):
        self.bb, self.corpus, self.recipe, self.progress = blackbox, corpus, recipe, progress
        self.spec = blackbox.input_spec if isinstance(blackbox, TensorBlackBox) else None
        self.spec_on_cuda = self.spec is not None and str(self.spec.device).startswith("cuda")
        copies = recipe.copies_per_image
        if self.spec is not None:
            h, w = self.spec.size
            pixels = CHUNK_PIXELS * (8 if str(self.spec.device).startswith("cuda") else 1)
            self.chunk = int(min(4096, max(copies, pixels // (3 * h * w))))
        else:
            self.chunk = CHUNK
        self.max_images = max(1, self.chunk // copies)  # images per job, so a job fits a chunk
        # One pool for the whole pass: the adaptive pass runs a round at a time, and
        # starting threads per round cost a 32 px model's search about 5% of its time.
        self.threads = io_threads()
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="df-fetch")

    def __enter__(self) -> "_Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def split(self, jobs: list[Job]) -> list[Job]:
        out = []
        for j, a, b in jobs:
            out += [(j, s, min(b, s + self.max_images)) for s in range(a, b, self.max_images)]
        return out

    def _fetch(self, job: Job, ahead: bool = True):
        j, a, b = job
        images = self.corpus.leaves[j].images
        fetched = [images[k] for k in range(a, b)]
        if ahead and self.spec is not None and (self.spec_on_cuda or any(resized_alone(im) for im in fetched)):
            from plugin.core.transforms import resize_batch

            # In the pool, one call per image shape. On CUDA the host side (stacking, pinning, the
            # copy) then overlaps the main thread's wait for the device; a lazy corpus's large
            # images are resized while the main thread runs the model. Small images on CPU, and
            # jobs fetched inline, are left to expand_to_input, which resizes a whole chunk in one
            # call (per job here, 20 calls a round, cost a 32 px model 6% of its search).
            fetched = resize_batch(fetched, self.spec)
        return fetched

    def _inline(self, job: Job) -> bool:
        """Whether to fetch ``job`` in the main thread: in-memory images, with no device to overlap.

        The pool pays off for decoding (a lazy corpus) and on CUDA. On CPU, handing an in-memory
        leaf to a thread cost more than the work (waking it behind torch's busy threads: about
        10 ms of a 32 px model's 0.2 s search on the demo corpus, whose rounds fit one chunk).
        """
        return not isinstance(self.corpus.leaves[job[0]].images, LazyImages) and not self.spec_on_cuda

    def _fetched(self, jobs: list[Job]) -> Iterator[tuple[Job, list]]:
        """Each job with its images, in order; decoding and large resizes run ahead in the pool."""
        inline = [self._inline(job) for job in jobs]
        ahead = [k for k, flag in enumerate(inline) if not flag]
        pending = {k: self.pool.submit(self._fetch, jobs[k]) for k in ahead[: PREFETCH * self.threads]}
        nxt = len(pending)
        try:
            for k, job in enumerate(jobs):
                if inline[k]:
                    yield job, self._fetch(job, ahead=False)
                    continue
                images = pending.pop(k).result()  # dropped here: memory bounded by the prefetch window
                if nxt < len(ahead):
                    pending[ahead[nxt]] = self.pool.submit(self._fetch, jobs[ahead[nxt]])
                    nxt += 1
                yield job, images
        finally:  # a failed chunk (a hostile black box) leaves no fetch running on
            for f in pending.values():
                f.cancel()

    def run(self, jobs: list[Job]) -> dict[Job, np.ndarray]:
        """Labels ``(stop - start, copies)`` per job (jobs already split to fit a chunk)."""
        copies = self.recipe.copies_per_image
        out: dict[Job, np.ndarray] = {}
        batch: list[tuple[Job, list]] = []
        size = 0

        def flush():
            nonlocal size
            if not batch:
                return
            if self.spec is not None:
                x = expand_to_input([(imgs, _seed(self.recipe, j), a) for (j, a, _), imgs in batch], self.recipe,
                                    self.spec)
                labels = self.bb.predict_tensor(x)
                del x
            else:
                expanded = []
                for (j, a, _), imgs in batch:
                    expanded += expand_leaf(imgs, self.recipe, seed=_seed(self.recipe, j), start=a)
                labels = self.bb.predict(expanded)
                del expanded
            if self.progress:
                self.progress(len(labels))
            pos = 0
            for job, imgs in batch:
                n = len(imgs) * copies
                out[job] = np.asarray(labels[pos : pos + n]).reshape(len(imgs), copies)
                pos += n
            batch.clear()
            size = 0

        for job, imgs in self._fetched(jobs):
            if size + len(imgs) * copies > self.chunk:
                flush()
            batch.append((job, imgs))
            size += len(imgs) * copies
        flush()
        return out


# -- the passes -------------------------------------------------------------------
def leaf_capacity(corpus: Corpus, recipe: Recipe) -> np.ndarray:
    """Images per leaf the recipe allows: ``images_per_leaf``, the leaf's size and the per-leaf budget."""
    cap = recipe.images_per_leaf
    if recipe.leaf_query_budget is not None:
        cap = min(cap, recipe.leaf_query_budget // recipe.copies_per_image)
    return np.array([min(len(leaf), cap) for leaf in corpus.leaves], dtype=np.int64)



def pass_queries(corpus: Corpus, recipe: Recipe, *, least: bool = False) -> int:
    """Queries one score pass over ``corpus`` may spend with ``recipe``: every leaf at its cap.

    With ``least``, the fewest it can work with: an adaptive pass's first round
    (it fits later rounds into a budget), the whole pass if exhaustive.
    """
    cap = leaf_capacity(corpus, recipe)
    if least and recipe.score_pass == "adaptive":
        cap = np.minimum(cap, recipe.adaptive_first_images)
    return int(cap.sum()) * recipe.copies_per_image


def functional_scores(blackbox: BlackBox, corpus: Corpus, recipe: Recipe, progress: Progress | None = None,
                      reserve: int = 0, settle: Settle | None = None) -> ScorePass:
    """Step 1: ``l(i, j)`` for every class at once, by the recipe's ``score_pass``.

    Rounds are fitted into ``query_budget`` less ``reserve`` (what the follow-up checks need).
    ``settle`` is the search's stability check on the pass so far: with ``adaptive_settle``,
    the adaptive pass stops once every class's answer is stable, and keeps querying the
    leaves in contention while some class's is not (stability is what "settled" means).
    """
    t0 = time.time()
    start_queries = blackbox.num_queries
    copies = recipe.copies_per_image
    n_leaves = len(corpus.leaves)
    cap = leaf_capacity(corpus, recipe)
    sent = np.zeros(n_leaves, dtype=np.int64)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_leaves)]
    counts = np.zeros((max(blackbox.num_classes or 0, 1), n_leaves), dtype=np.int64)
    adaptive = recipe.score_pass == "adaptive"
    target = recipe.adaptive_first_images if adaptive else int(cap.max())
    is_open = cap > 0
    rounds: list[dict] = []
    agreement = _CopyAgreement(n_leaves, copies)
    needed = needed_rate(cap, recipe)

    def snapshot(**extra) -> ScorePass:  # the pass so far; at the end, the result
        labels = [np.concatenate(p) if p else np.zeros((0, copies), np.int64) for p in parts]
        return ScorePass([leaf.synset for leaf in corpus.leaves], counts, sent * copies, sent.copy(), labels,
                         blackbox.num_queries - start_queries, time.time() - t0, capacity=cap, **extra)

    with _Pipeline(blackbox, corpus, recipe, progress) as pipe:
        while is_open.any():
            jobs = [(int(j), int(sent[j]), int(min(cap[j], target))) for j in np.flatnonzero(is_open)]
            jobs = [jb for jb in jobs if jb[2] > jb[1]]
            jobs = _within_budget(jobs, recipe, copies, blackbox.num_queries - start_queries + reserve)
            if not jobs:
                break
            q0 = blackbox.num_queries
            for (j, a, b), lab in pipe.run(pipe.split(jobs)).items():
                parts[j].append(lab)
                sent[j] = max(sent[j], b)
                hi = int(lab.max()) + 1 if lab.size else 0
                if hi > counts.shape[0]:
                    counts = np.vstack([counts, np.zeros((hi - counts.shape[0], n_leaves), dtype=np.int64)])
                counts[:, j] += np.bincount(lab.ravel(), minlength=counts.shape[0])
                agreement.add(j, lab)
            rounds.append({"images_per_leaf": int(target), "open_leaves": int(is_open.sum()),
                           "queries": int(blackbox.num_queries - q0)})
            is_open &= sent < cap
            if not adaptive or not (sent < cap).any():
                break
            kappa = agreement.kappa(counts)
            rounds[-1]["copy_kappa"] = round(kappa, 3)
            n_eff = agreement.effective(sent, kappa) if recipe.adaptive_copy_agreement else None
            is_open &= ~_decided(counts, sent, copies, recipe, n_eff, needed)
            if settle is not None and recipe.adaptive_settle:
                contested, unstable = settle(snapshot())
                rounds[-1]["unstable_classes"] = unstable
                # All or nothing: coherence couples the classes, so a class that holds now can still
                # move when another one does. While some class is unstable, the leaves in contention
                # for it stay open (or open again) even when the bounds alone had closed them.
                if unstable == 0:
                    is_open[:] = False
                else:
                    is_open |= contested & (sent < cap)
            if recipe.adaptive_halving:
                is_open = _halve(is_open, counts, sent, copies, recipe, n_eff)
            target = int(math.ceil(target * recipe.adaptive_growth))
    num_classes = blackbox.num_classes or counts.shape[0]
    if counts.shape[0] > num_classes:
        raise ValueError(f"black box returned label {counts.shape[0] - 1} but claims {num_classes} classes")
    if counts.shape[0] < num_classes:
        counts = np.vstack([counts, np.zeros((num_classes - counts.shape[0], n_leaves), dtype=np.int64)])
    return snapshot(exhaustive_queries=int(cap.sum() * copies), rounds=rounds)


def _within_budget(jobs: list[Job], recipe: Recipe, copies: int, spent: int) -> list[Job]:
    """Trims a round to the per-model ``query_budget``: a planned pass, not a crash mid-chunk."""
    if recipe.query_budget is None:
        return jobs
    left = recipe.query_budget - spent
    want = sum(b - a for _, a, b in jobs) * copies
    # A round that does not fit is spread evenly (every open leaf gets some images), not cut off.
    share = (b - a for _, a, b in jobs) if want <= left else [max(1, left // (copies * len(jobs)))] * len(jobs)
    out = []
    for (j, a, b), most in zip(jobs, share):
        n = min(b - a, most, left // copies)
        if n <= 0:
            break
        out.append((j, a, a + n))
        left -= n * copies
    return out


def _bounds(counts: np.ndarray, sent: np.ndarray, copies: int, z: float, n_eff: np.ndarray | None = None):
    p = counts / np.maximum(sent * copies, 1)[None, :]
    n = np.maximum(sent if n_eff is None else n_eff, 1)[None, :]
    return p, wilson_lower_bound(p, n, z), wilson_upper_bound(p, n, z)


class _CopyAgreement:
    """How alike the black box labels the copies of one image, pooled over the pass (Fleiss' kappa).

    The bounds count distinct images, the worst case where all copies of an
    image agree. When the black box's copies vary more than that, each image
    is worth more: Kish's design effect ``1 + (copies - 1) * kappa`` turns
    ``images * copies`` queries into the effective sample. Pure leaves (every
    copy the same label) say nothing about kappa; with no informative leaf
    kappa stays 1, the worst case.
    """

    def __init__(self, n_leaves: int, copies: int):
        self.copies = copies
        self.pairs = [(a, b) for a in range(copies) for b in range(a + 1, copies)]
        self.agree = np.zeros(n_leaves)  # agreeing copy pairs, summed over images
        self.images = np.zeros(n_leaves)

    def add(self, j: int, labels: np.ndarray) -> None:
        if self.pairs and len(labels):
            self.agree[j] += sum(float((labels[:, a] == labels[:, b]).sum()) for a, b in self.pairs) / len(self.pairs)
            self.images[j] += len(labels)

    def kappa(self, counts: np.ndarray) -> float:
        if not self.pairs:
            return 1.0
        tot = np.maximum(counts.sum(axis=0), 1)
        chance = ((counts / tot[None, :]) ** 2).sum(axis=0)  # agreement if copies were independent draws
        room = float((self.images * (1 - chance)).sum())
        if room < 1.0:  # only pure leaves so far: no evidence that copies are less alike than the worst case
            return 1.0
        return float(np.clip((self.agree.sum() - (self.images * chance).sum()) / room, 0.0, 1.0))

    def effective(self, sent: np.ndarray, kappa: float) -> np.ndarray:
        """Images worth of evidence per leaf: ``sent * copies`` over the design effect."""
        return sent * self.copies / (1 + (self.copies - 1) * kappa)


def needed_rate(capacity: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Per leaf, the least functional score whose support-adjusted score passes the threshold.

    Candidates are judged on the Wilson bound at ``confidence_z`` over the
    images a leaf gives, so even at full capacity a leaf needs a rate above
    the threshold itself (0.38 at 30 images, 0.36 at 50 for threshold 0.3).
    A leaf that stops early gives fewer images and needs more still. Above 1
    when no rate can pass (a leaf too small ever to be a candidate).
    """
    sizes, at = np.unique(np.maximum(np.asarray(capacity, dtype=float), 1), return_inverse=True)
    return _needed_at(tuple(sizes.tolist()), recipe.threshold, recipe.confidence_z)[at.reshape(-1)]


@lru_cache(maxsize=64)
def _needed_at(sizes: tuple[float, ...], threshold: float, z: float) -> np.ndarray:
    """:func:`needed_rate` per distinct capacity, kept: every search on one corpus and recipe asks the same."""
    cap = np.array(sizes)
    lo, hi = np.zeros_like(cap), np.ones_like(cap)
    for _ in range(30):  # bisection: the bound rises with the rate
        mid = (lo + hi) / 2
        passes = wilson_lower_bound(mid, cap, z) >= threshold
        hi, lo = np.where(passes, mid, hi), np.where(passes, lo, mid)
    never = wilson_lower_bound(1.0, cap, z) < threshold
    return np.where(never, 1.01, hi)


def _decided(counts: np.ndarray, sent: np.ndarray, copies: int, recipe: Recipe,
             n_eff: np.ndarray | None = None, needed: np.ndarray | None = None) -> np.ndarray:
    """Leaves whose candidate status is decided for every class at ``adaptive_z``.

    ``needed`` is :func:`needed_rate` per leaf (the threshold itself when unset).
    """
    p, lo, up = _bounds(counts, sent, copies, recipe.adaptive_z, n_eff)
    need = recipe.threshold if needed is None else np.asarray(needed)[None, :]
    k = min(recipe.top_k, lo.shape[1])
    kth = -np.partition(-lo, k - 1, axis=1)[:, k - 1 : k]  # per class, the top_k-th best lower bound
    out = (up < need) | (up < kth)  # cannot become a candidate even at full capacity, or cannot make the top_k
    # Surely a candidate, and measured well enough: its score enters the objective, where
    # clusters differ by a few hundredths, so a candidate leaf is refined to ``adaptive_precision``.
    # Only the top_k of a class's sure candidates enter it: a 10-class model has ~100 leaves
    # at 0.9 per class, and refining the ties beyond its top_k buys nothing.
    sure = lo >= recipe.threshold
    _, lo1, up1 = _bounds(counts, sent, copies, recipe.confidence_z, n_eff)
    measured = np.where(sure, p, -1.0)
    kth_sure = -np.partition(-measured, k - 1, axis=1)[:, k - 1 : k]
    enters = sure & (measured >= kth_sure)
    settled = sure & (~enters | ((up1 - lo1) / 2 <= recipe.adaptive_precision))
    return np.all(out | settled, axis=0)


def optimistic(sp: "ScorePass", recipe: Recipe, spare: np.ndarray) -> tuple["ScorePass", np.ndarray]:
    """The pass with every rough rival at its upper bound: the most that more images could make of it.

    A bootstrap resamples the images a pass has; it cannot resample the ones
    it has not sent. A rough rival of class ``i`` is a leaf that can still
    grow, whose point score would make it a candidate, and that is either not
    surely one (its lower bound at ``adaptive_z`` is below the threshold: a
    bag class at 2 of 4 bag images) or not yet measured to
    ``adaptive_precision`` (half-width at ``confidence_z``: a coat leaf at 11
    of 16 images, whose other 34 the model takes at 0.9). Its score is raised
    to its upper bound at ``adaptive_z``, counting images (the worst case).
    ``spare`` (classes x leaves) marks the cells left as they are (each
    class's chosen leaves). Returns the raised pass and which cells were raised.
    """
    n, cap = np.asarray(sp.n_images), np.asarray(sp.capacity)
    p, images = sp.scores, np.maximum(n, 1)[None, :]
    lo, up = wilson_lower_bound(p, images, recipe.adaptive_z), wilson_upper_bound(p, images, recipe.adaptive_z)
    rough = ((lo < recipe.threshold) & (n < cap)[None, :]) | unrefined(sp, recipe, range(len(n)))
    raised = rough & (p >= needed_rate(cap, recipe)[None, :]) & ~np.asarray(spare, dtype=bool)
    out = ScorePass(sp.leaves, np.where(raised, up * np.asarray(sp.totals, dtype=float)[None, :], sp.counts),
                    sp.totals, sp.n_images, sp.labels, sp.queries, sp.seconds, capacity=cap,
                    exhaustive_queries=sp.exhaustive_queries)
    filtered = sp.filtered_at_capacity(recipe)  # what filtering would give, raised alike
    out._memo[("filtered", recipe.include_original)] = np.where(
        raised, np.maximum(filtered, up * cap.astype(float)[None, :]), filtered)
    return out, raised


def unrefined(sp: "ScorePass", recipe: Recipe, leaves) -> np.ndarray:
    """``(classes, len(leaves))``: whether each class's score on each of ``leaves`` is not yet known to
    ``adaptive_precision`` (its half-width at ``confidence_z``, counting images: the worst case) while
    the leaf can still grow."""
    idx = np.asarray(leaves, dtype=int)
    n = np.asarray(sp.n_images)[idx]
    p, images = sp.scores[:, idx], np.maximum(n, 1)[None, :]
    half = (wilson_upper_bound(p, images, recipe.confidence_z) - wilson_lower_bound(p, images, recipe.confidence_z)) / 2
    return (half > recipe.adaptive_precision) & (n < np.asarray(sp.capacity)[idx])[None, :]


def _halve(is_open: np.ndarray, counts: np.ndarray, sent: np.ndarray, copies: int, recipe: Recipe,
           n_eff: np.ndarray | None = None) -> np.ndarray:
    """Successive halving: keeps the more promising half of the open leaves.

    A leaf's promise is its best point score over the classes it is still
    undecided for, so a leaf open only because of a few stray labels yields
    to one whose own class is still in doubt.
    """
    idx = np.flatnonzero(is_open)
    if len(idx) <= 1:
        return is_open
    p, lo, up = _bounds(counts[:, idx], sent[idx], copies, recipe.adaptive_z, None if n_eff is None else n_eff[idx])
    undecided = (up >= recipe.threshold) & (lo < recipe.threshold)
    promise = np.where(undecided, p, -1.0).max(axis=0)
    keep = idx[np.argsort(-promise, kind="stable")[: int(math.ceil(len(idx) / 2))]]
    out = np.zeros_like(is_open)
    out[keep] = True
    return out


def effective_min_samples(sp: ScorePass, recipe: Recipe) -> int:
    """Generality scaled to what a leaf can supply.

    ``min_samples`` filtered images, but never more than
    ``min_samples_fraction`` of the most images one leaf can supply: with 20
    images per leaf a single ImageNet leaf must be able to be a domain (15 of
    20), while one-image leaves stay weak evidence. The demo recipes (30 and
    50 images per leaf) keep 20.
    """
    most = int(np.max(sp.capacity)) if len(sp.capacity) else 0
    return int(min(recipe.min_samples, math.ceil(recipe.min_samples_fraction * most)))


def leaf_spend(sp: ScorePass, copies: int) -> list[tuple[str, int, int]]:
    """Per leaf, ``(synset, images, queries)`` the pass spent."""
    return [(s, int(n), int(n) * copies) for s, n in zip(sp.leaves, sp.n_images)]


def image_labels(labels: np.ndarray, recipe: Recipe) -> np.ndarray:
    """One label per image for filtering: the original's, else the copies' majority."""
    if labels.size == 0:
        return np.zeros(0, np.int64)
    if recipe.include_original:
        return labels[:, 0]
    # The most frequent label of each row, ties to the smallest (as bincount().argmax()), vectorised.
    votes = (labels[:, :, None] == labels[:, None, :]).sum(axis=2)
    top = votes == votes.max(axis=1, keepdims=True)
    return np.where(top, labels, np.iinfo(np.int64).max).min(axis=1).astype(np.int64)


# -- stability: the pass's own evidence, resampled ----------------------------------
class Resampler:
    """Bootstrap resamples of a pass: each leaf's images drawn with replacement, copies kept together.

    A resample is a :class:`ScorePass` with the same leaves, totals and
    capacity, whose counts (and filtered counts) come from the drawn images.
    It costs no queries. The pass's labels are flattened once, so a resample
    is a few array operations however many leaves there are.
    """

    def __init__(self, sp: ScorePass, recipe: Recipe):
        self.sp, self.recipe = sp, recipe
        n = np.asarray(sp.n_images, dtype=np.int64)
        self.n, self.classes, self.leaves = n, sp.counts.shape[0], len(sp.leaves)
        self.owner = np.repeat(np.arange(self.leaves), n)
        self.start = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        rows = [lab for lab in sp.labels if len(lab)]
        copies = rows[0].shape[1] if rows else 1
        flat = np.concatenate(rows) if rows else np.zeros((0, copies), np.int64)
        self.labels = np.where((flat >= 0) & (flat < self.classes), flat, self.classes)  # out of range: one bin, dropped
        self.image = image_labels(flat, recipe) if len(flat) else np.zeros(0, np.int64)
        self.image = np.where((self.image >= 0) & (self.image < self.classes), self.image, self.classes)
        n_f = n.astype(float)
        self.scale = np.where(n > 0, np.asarray(sp.capacity, dtype=float) / np.maximum(n_f, 1), 0.0)

    def draw(self, rng: np.random.Generator) -> ScorePass:
        """One resample."""
        sp, bins = self.sp, (self.classes + 1) * self.leaves
        idx = self.start[self.owner] + (rng.random(len(self.owner)) * self.n[self.owner]).astype(np.int64)
        copies = self.labels.shape[1]
        cols = np.repeat(self.owner, copies)
        counts = np.bincount(self.labels[idx].ravel() * self.leaves + cols, minlength=bins)
        counts = counts.reshape(self.classes + 1, self.leaves)[: self.classes]
        hist = np.bincount(self.image[idx] * self.leaves + self.owner, minlength=bins)
        filtered = hist.reshape(self.classes + 1, self.leaves)[: self.classes] * self.scale[None, :]
        out = ScorePass(sp.leaves, counts, sp.totals, sp.n_images, sp.labels, sp.queries, sp.seconds,
                        capacity=sp.capacity, exhaustive_queries=sp.exhaustive_queries)
        out._memo[("filtered", self.recipe.include_original)] = filtered  # the drawn images, not the pass's labels
        return out


# -- step 4: filtering on real images -----------------------------------------------
def filter_images(blackbox: BlackBox, corpus: Corpus, recipe: Recipe, sp: ScorePass,
                  wanted: dict[int, tuple[tuple[int, ...], int | None]], progress: Progress | None = None,
                  reserve: int = 0, spent: int = 0) -> dict[int, np.ndarray]:
    """Step 4: hard labels of images the pass did not send, from the chosen leaves of the classes in ``wanted``.

    ``wanted`` maps a class to ``(its chosen leaves, the real images it still
    needs)``; ``None`` asks for every unsent image (``filter_all``). A class is
    found only on images of its chosen leaves that really come back as it (the
    paper's filtering), not on what the adaptive pass extrapolated. Each
    unsent image is queried once, as it is (no transformed copies), in rounds
    sized by the class's rate so far, until it has what it needs or its leaves
    run out: never more than the exhaustive pass would have sent them. A leaf
    two classes share is queried once. ``spent`` queries of ``query_budget``
    (less ``reserve``) are gone already; a budget that runs out leaves the
    rest unqueried, and those images count for no class. Returns, per leaf,
    the labels of images ``n_images[j]``, ``n_images[j] + 1``, ... in order.
    """
    plain = recipe.replace(transforms_per_image=0, include_original=True)
    cap, nxt = np.asarray(sp.capacity), np.asarray(sp.n_images).astype(np.int64).copy()
    got: dict[int, list[np.ndarray]] = {}
    seen = {i: (int(nxt[list(m)].sum()), need) for i, (m, need) in wanted.items()}  # images seen, still needed
    # The class's rate on the images the pass sent sizes the first round (at least a quarter: no endless trickle).
    rate = {i: sum(int((image_labels(sp.labels[j], recipe) == i).sum()) for j in m) / max(seen[i][0], 1)
            for i, (m, _) in wanted.items()}
    pending = {i: m for i, (m, need) in wanted.items() if need is None or need > 0}
    if not pending:
        return {}
    with _Pipeline(blackbox, corpus, plain, progress) as pipe:
        while pending:
            want: dict[int, int] = {}
            for i, members in pending.items():
                open_ = [j for j in members if nxt[j] < cap[j]]
                need = seen[i][1]
                per = int(cap.max()) if need is None else \
                    int(math.ceil(need / max(rate[i], 0.25) / max(len(open_), 1)))
                for j in open_:
                    want[j] = max(want.get(j, 0), per)
            jobs = [(j, int(nxt[j]), int(min(cap[j], nxt[j] + k))) for j, k in sorted(want.items())]
            jobs = _within_budget(jobs, plain, 1, spent + reserve)
            if not jobs:
                break
            for (j, a, b), lab in sorted(pipe.run(pipe.split(jobs)).items()):
                got.setdefault(j, []).append(lab[:, 0])
                nxt[j] = max(nxt[j], b)
                spent += b - a
            for i in list(pending):
                members = pending[i]
                new = sum(int((np.concatenate(got[j]) == i).sum()) for j in members if j in got)
                before, need = seen[i]
                if need is not None:
                    rate[i] = new / max(int(nxt[list(members)].sum()) - before, 1)
                    seen[i] = (before, wanted[i][1] - new)
                if (need is not None and seen[i][1] <= 0) or all(nxt[j] >= cap[j] for j in members):
                    del pending[i]
    return {j: np.concatenate(parts) for j, parts in got.items()}
