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
Its hooks: ``validate`` (a plan listing it is refused in one line, before the
first query, unless both folders, the extra and the device pass), ``reserve``
(``max_queries`` is kept from the corpus pass) and ``answer`` (the model-level
answer says which classes the corpus named and which generation named).
Called without a plan and without ``sd_dir``/``clip_dir`` it is not applicable.
:func:`generated_domains` hands its saved domains to the clone check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plugin.artifacts import montage
from plugin.checks.base import CheckContext, CheckResult, register_check
from plugin.report import shorten
from plugin.core.errors import HierarchyError
from plugin.core.hierarchy import default_wordnet
from plugin.generative.config import GenerativeConfig
from plugin.generative.prompts import warm_start, wordnet_neighbours
from plugin.generative.search import ClassResult, search_class

NAME = "generative"
SAMPLER = ("generator", "steps", "guidance", "image_size", "dtype", "device", "batch_size")  # what resampling needs


def _generator_key(config: GenerativeConfig) -> tuple:
    """What a loaded generator depends on: a later check reuses it (``CheckContext.shared``) only when all match."""
    return ("generator", config.sd_dir, *(getattr(config, k) for k in SAMPLER))


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


def validate_options(options: dict, recipe) -> None:
    """The ``validate`` hook: the config, the extra, both weight folders and the device, before the first query."""
    from plugin.generative.real import validate

    validate(GenerativeConfig.from_options(options))


def reserve(options: dict, recipe) -> int:
    """The ``reserve`` hook: the stage's own cap (``max_queries``) is kept from the corpus pass."""
    return GenerativeConfig.from_options(options).max_queries or 0


def answer(summary: dict) -> str:
    """The ``answer`` hook: which classes the corpus named and which generation named, with their prompts."""
    named = summary.get("named_by") or {}
    total = summary.get("num_classes") or len({i for v in named.values() for i in v})
    prompts = {c["index"]: c["embeddings"][0]["nearest_prompts"][0] for c in summary.get("classes", [])
               if c.get("embeddings")}
    gen = named.get("generation", [])
    shown = ", ".join(repr(shorten(prompts[i], 40)) for i in gen[:3] if i in prompts)
    shown += ", ..." if len(gen) > 3 else ""
    return (f"corpus named {len(named.get('corpus', []))}/{total}, generation named {len(gen)}/{total}"
            + (f" ({shown})" if shown else ""))


@register_check(NAME, validate=validate_options, reserve=reserve, answer=answer)
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
        ctx.shared[_generator_key(config)] = generator  # the clone check samples the same generator
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
    summary = {"verdict": verdict, "num_classes": len(findings), "classes_searched": [c.index for c in targets],
               "queries": queries,
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


@dataclass(frozen=True)
class GeneratedDomains:
    """What an earlier generative check kept: per class its saved embeddings and scoring seeds, and the sampler."""

    config: GenerativeConfig
    classes: tuple[tuple[int, Path, tuple[int, ...]], ...]  # (class index, embeddings.npy, the seeds it was scored on)

    def transfer_set(self, n: int, shared: dict | None = None) -> tuple[list, list[dict]]:
        """``n`` samples spread evenly over the classes (and each class's embeddings), drawn through the same
        generator on the recorded seeds first, then on fresh ones after the montage's; with what was drawn.

        ``shared`` (``CheckContext.shared``) holds the generator the generative check loaded, when it ran
        in the same investigation; else it is loaded again.
        """
        from plugin.generative.real import GENERATORS, load_embeddings, sample

        generator = (shared or {}).get(_generator_key(self.config))
        if generator is None:
            generator = GENERATORS.get(self.config.generator)(self.config)
        m = len(self.classes)
        images, record = [], []
        for j, (index, path, scored) in enumerate(self.classes):
            quota = n // m + int(j < n % m)
            if not quota:
                continue
            emb = load_embeddings(path)
            per = -(-quota // len(emb))
            fresh = scored[-1] + 1 + self.config.montage_seeds  # the montage used the seeds just after the scoring ones
            seeds = [*scored[:per], *range(fresh, fresh + per - len(scored[:per]))]
            drawn = np.asarray(sample(generator, emb, seeds))
            # seed-major: every embedding in turn, so a quota short of k * per still draws from each
            images += list(drawn.swapaxes(0, 1).reshape(-1, *drawn.shape[2:])[:quota])
            record.append({"class": index, "embeddings": len(emb), "seeds": seeds, "images": quota})
        return images, record


def generated_domains(earlier) -> GeneratedDomains | str:
    """The domains an earlier generative check saved (see :class:`GeneratedDomains`), or why there are none."""
    res = next((c for c in earlier if c.name == NAME), None)
    if res is None:
        return "no generative findings: list the generative check with the clone check"
    if not res.applicable:
        return f"no generative findings: the generative check did not apply ({res.reason})"
    files = {p.parent.name: p for p in res.artifacts if p.name == "embeddings.npy"}
    classes = tuple((c["index"], files[f"class_{c['index']:04d}"], tuple(c["seeds"]))
                    for c in res.summary.get("classes", []) if f"class_{c['index']:04d}" in files)
    if not classes:
        return "no generative findings: the generative check kept no embeddings for any class"
    return GeneratedDomains(GenerativeConfig.from_options(res.summary["config"]), classes)
