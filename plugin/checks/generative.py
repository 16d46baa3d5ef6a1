"""Method 1 after the corpus search: name the classes the corpus could not, by generation.

For each class the corpus search left unfound or unsettled (option
``classes: all`` for every class), :func:`plugin.generative.search.search_class`
looks for ``k`` text-space embeddings of a text-to-image generator whose
samples the black box labels as that class, warm-started from what the corpus
search believed of it. Its queries go through the same black box, so they are
counted and budgeted like the corpus pass (the recipe's ``query_budget``, and
the option ``max_queries`` for this stage).

Per class it writes, under ``generative/class_NNNN/``: ``embeddings.npy``
(what the generator conditions on; sample more with
:func:`plugin.generative.real.sample`), ``text.npy`` (the same embeddings in
CLIP's space), ``prompts.json`` (nearest prompts, weights over the prompt
bank, the seeds, both terms of the objective) and ``montage.png``.

Options: the fields of :class:`~plugin.generative.config.GenerativeConfig`.
Without ``sd_dir`` and ``clip_dir`` the check is not applicable.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from plugin.artifacts import montage
from plugin.checks.base import CheckContext, CheckResult, register_check
from plugin.core.errors import HierarchyError
from plugin.core.hierarchy import default_wordnet
from plugin.generative.config import GenerativeConfig
from plugin.generative.prompts import warm_start, wordnet_neighbours
from plugin.generative.search import ClassResult, search_class

NAME = "generative"
SAMPLER = ("generator", "steps", "guidance", "image_size", "dtype", "device", "batch_size")  # what resampling needs


def unsettled(finding) -> bool:
    """A class the corpus search did not settle: unfound, ambiguous, or ``status`` "uncertain" (its answer
    does not hold under resampling; read with getattr, so findings without a status work too)."""
    return not finding.found or finding.ambiguous or getattr(finding, "status", "") == "uncertain"


def stage_budget(ctx: CheckContext, config: GenerativeConfig) -> int | None:
    """Queries this stage may spend: what the black box's budget has left, capped by ``max_queries``."""
    left = getattr(ctx.blackbox, "budget", None)
    if left is not None:
        left = max(0, left - ctx.blackbox.num_queries)
    caps = [c for c in (left, config.max_queries) if c is not None]
    return min(caps) if caps else None


@register_check(NAME)
def generative_check(ctx: CheckContext) -> CheckResult:
    config = GenerativeConfig.from_options(ctx.options)
    if not config.sd_dir or not config.clip_dir:
        reason = "no generator weights: pass --generative SD_DIR --clip CLIP_DIR (options sd_dir, clip_dir)"
        return CheckResult(NAME, False, {"reason": reason}, reason=reason)
    from plugin.generative.real import load  # torch, diffusers, transformers: only when the check runs

    findings = ctx.result.findings.classes
    targets = [c for c in findings if config.classes == "all" or unsettled(c)]
    corpus_found = [c.index for c in findings if c.found and not unsettled(c)]
    out = Path(ctx.out_dir) / NAME
    results: list[ClassResult] = []
    artifacts: list[Path] = []
    left = stage_budget(ctx, config)
    skipped = []
    if targets:
        generator, encoder = load(config)
        hierarchy = ctx.corpus.hierarchy
        try:
            wordnet = default_wordnet()
        except HierarchyError:
            wordnet = None  # custom trees still give their leaf names
        neighbours = wordnet_neighbours(hierarchy, wordnet)
        for finding in targets:
            if left is not None and left < config.seeds:
                skipped.append(finding.index)
                continue
            start = warm_start(finding, hierarchy, wordnet, config.start_prompts)
            res = search_class(finding.index, start, generator, encoder, ctx.blackbox.predict, config,
                               neighbours, budget=left)
            left = None if left is None else left - res.queries
            results.append(res)
            artifacts += _write_class(res, generator, config, out / f"class_{finding.index:04d}")
    named = [r.index for r in results if r.kept and r.relevance >= config.min_relevance]
    neither = [c.index for c in findings if c.index not in corpus_found and c.index not in named]
    queries = sum(r.queries for r in results)
    verdict = (f"generation named {len(named)} of {len(targets)} searched classes "
               f"(the corpus settled {len(corpus_found)} of {len(findings)})")
    summary = {"verdict": verdict, "classes_searched": [c.index for c in targets], "queries": queries,
               "named_by": {"corpus": corpus_found, "generation": named, "neither": neither},
               "skipped_for_budget": skipped, "config": config.to_options(),
               "classes": [r.to_dict() for r in results]}
    metrics = {"generative.queries": float(queries), "generative.classes_searched": float(len(targets)),
               "generative.classes_named": float(len(named))}
    if results:
        metrics["generative.mean_relevance"] = float(np.mean([r.relevance for r in results]))
        metrics["generative.mean_generality"] = float(np.mean([r.generality for r in results]))
    for r in results:
        metrics.update({f"generative.class_{r.index}.{k}": float(v) for k, v in
                        (("relevance", r.relevance), ("generality", r.generality), ("objective", r.objective),
                         ("queries", r.queries))})
    return CheckResult(NAME, True, summary, metrics, tuple(artifacts))


def _write_class(res: ClassResult, generator, config: GenerativeConfig, folder: Path) -> list[Path]:
    """The class's embeddings (both spaces), their prompts and a montage of fresh samples."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "prompts.json"]
    sampler = {k: getattr(config, k) for k in SAMPLER}
    paths[0].write_text(json.dumps({**res.to_dict(), "sampler": sampler,
                                    "prompt_bank": [p.to_dict() for p in res.prompts]}, indent=2) + "\n",
                        encoding="utf-8")
    if not res.kept:
        return paths
    np.save(folder / "embeddings.npy", res.embeddings, allow_pickle=False)
    np.save(folder / "text.npy", res.text, allow_pickle=False)
    paths += [folder / "embeddings.npy", folder / "text.npy"]
    if config.montage_seeds:
        # Seeds after the scoring ones: samples the search never saw, and they cost no query.
        seeds = [res.seeds[-1] + 1 + j for j in range(config.montage_seeds)]
        images = np.asarray(generator.generate(res.embeddings, seeds))
        caption = f"class {res.index}: {res.nearest[0][0]} (relevance {res.relevance:.2f})"
        paths.append(montage(list(images.reshape(-1, *images.shape[2:])), folder / "montage.png",
                             cols=config.montage_seeds, caption=caption))
    return paths
