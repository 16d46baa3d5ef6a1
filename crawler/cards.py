"""How undocumented is a hub model? Scores a model card and its config.

The crawler only spends black-box queries on models whose makers did not say
what data they were made for. :func:`assess_documentation` turns a README
(model card) and a ``config.json`` into a score in ``[0, 1]``, where 1 means
"nothing at all is documented", and keeps the reasons so that a skipped or
flagged model can be explained in the MLflow run.

Signals and their weights (they add up to 1):

==============================  ======  =============================================
signal                          weight  fires when
==============================  ======  =============================================
no / boilerplate card           0.20    no README, only YAML front matter, or only
                                        auto-generated template text
little prose                    0.25    fewer than :data:`MIN_PROSE_WORDS` words of
                                        prose (outside front matter, code, tables,
                                        headings, HTML comments and template lines)
no ``datasets:`` metadata       0.20    the front matter names no dataset
no label names                  0.20    config has no ``label_names`` / ``id2label``
no dataset in the prose         0.15    the prose names no known dataset and has no
                                        "trained on <Name>" phrase
==============================  ======  =============================================

A model is *undocumented* when its score is at least
:data:`UNDOCUMENTED_THRESHOLD` (0.5). So a card that declares its dataset in
the metadata and describes it in prose (score 0.2) is documented, a model with
class names in its config plus prose about its training data (0.2) is
documented, and a bare front matter (1.0) or a long card that never says what
data the model saw (>= 0.55) is not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from plugin.models.hub_layout import has_label_names, is_classifier  # noqa: F401 - re-exported for the scan
from plugin.models.limits import MAX_CARD_BYTES, ResourceLimitError, check_tree

# Cards are hostile input: every pass below is linear in the card's length
# (no regex that can rescan the rest of the card from each position), and
# the YAML front matter is bounded before and after parsing.
MAX_FRONT_MATTER = 64 * 2**10
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MIN_PROSE_WORDS = 40
UNDOCUMENTED_THRESHOLD = 0.5
WEIGHTS = {"boilerplate": 0.20, "little_prose": 0.25, "no_datasets_metadata": 0.20,
           "no_label_names": 0.20, "no_dataset_in_prose": 0.15}

# Lines that template generators (transformers' Trainer, the Hub's default
# card template, timm's push_to_hub) write whatever the model is.
BOILERPLATE_MARKERS = (
    "this model card has been automatically generated",
    "more information needed",
    "provide a quick summary of what the model is",
    "model card for",
)
_BOILERPLATE_LINE = re.compile(r"more information needed|automatically generated|^\s*[-*]?\s*\*\*[^*]+:\*\*\s*$", re.I)

# Dataset names recognised in prose; the value is the canonical name reported.
KNOWN_DATASETS = {
    r"fashion[-_ ]?mnist": "fashion_mnist",
    r"(?<![a-z-])k-?mnist": "kmnist",
    r"(?<![a-z-])e-?mnist": "emnist",
    r"(?<![a-z_-])mnist": "mnist",
    r"cifar[-_ ]?100": "cifar100",
    r"cifar[-_ ]?10(?!0)": "cifar10",
    r"tiny[-_ ]?imagenet": "tiny_imagenet",
    r"imagenet[-_ ]?21k|imagenet[-_ ]?22k|in22k|in21k": "imagenet-21k",
    r"imagenet(?:[-_ ]?1k)?|ilsvrc|in1k": "imagenet-1k",
    r"\bsvhn\b": "svhn",
    r"\bms[-_ ]?coco\b|\bcoco\b": "coco",
    r"places[-_ ]?365": "places365",
    r"inaturalist": "inaturalist",
    r"food[-_ ]?101": "food101",
    r"oxford[-_ ]?(?:iiit[-_ ]?)?pets": "oxford_pets",
    r"stanford[-_ ]?cars": "stanford_cars",
    r"(?:oxford[-_ ]?)?flowers[-_ ]?102": "flowers102",
    r"caltech[-_ ]?(?:101|256)": "caltech",
    r"celeb[-_ ]?a\b": "celeba",
    r"\bstl[-_ ]?10\b": "stl10",
    r"\blaion(?:[-_ ]?\w+)?": "laion",
    r"open[-_ ]?images": "openimages",
    r"\bjft(?:[-_ ]?\d+m)?\b": "jft",
    r"eurosat": "eurosat",
    r"load_digits|uci (?:optical )?(?:recognition of )?handwritten digits": "uci_digits",
}
_KNOWN_RE = [(re.compile(p, re.I), name) for p, name in KNOWN_DATASETS.items()]
# "trained on the Foo-Bar dataset": a capitalised name right after the phrase.
_TRAINED_ON = re.compile(r"\b(?:trained|fine-?tuned|pre-?trained)\s+(?:\w+\s+)?on\s+(?:the\s+|a\s+|an\s+)?"
                         r"([A-Z][\w\-]*(?:\s+[A-Z0-9][\w\-]*)*)")
_NOT_NAMES = {"The", "A", "An", "This", "These", "Our", "It", "We", "I"}


@dataclass(frozen=True)
class Documentation:
    """How well a model says what it was made for.

    Attributes:
        score: in ``[0, 1]``; 1 means totally undocumented.
        undocumented: ``score >= UNDOCUMENTED_THRESHOLD``.
        reasons: one human-readable line per signal that fired.
        datasets: dataset names from the metadata, then from the prose.
    """

    score: float
    undocumented: bool
    reasons: tuple[str, ...]
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class FrontMatter:
    """A README split into its YAML metadata and its markdown body."""

    meta: dict | None  # None when there is no front matter or it is malformed
    body: str
    error: str | None = None  # why the front matter could not be parsed


def split_front_matter(text: str) -> FrontMatter:
    """Splits ``---``-fenced YAML front matter from a README.

    Malformed YAML (or YAML that is not a mapping) is reported in ``error``;
    it never raises, because cards are untrusted input.
    """
    text = text.lstrip("\ufeff")
    m = re.match(r"\A\s*---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*(?:\r?\n|\Z)", text, re.S | re.M)
    if not m:
        return FrontMatter(None, text)
    body = text[m.end():]
    if len(m.group(1)) > MAX_FRONT_MATTER:
        return FrontMatter(None, body, f"YAML front matter over {MAX_FRONT_MATTER} characters; not parsed")
    try:
        meta = yaml.load(m.group(1), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
        check_tree(meta, "YAML front matter", max_nodes=20_000)
    except yaml.YAMLError as e:
        return FrontMatter(None, body, f"malformed YAML front matter ({(str(e).splitlines() or ['?'])[0]})")
    except (RecursionError, ValueError, ResourceLimitError) as e:
        return FrontMatter(None, body, f"YAML front matter refused ({type(e).__name__}: {str(e)[:120]})")
    if meta is None:
        return FrontMatter({}, body)
    if not isinstance(meta, dict):
        return FrontMatter(None, body, f"YAML front matter is a {type(meta).__name__}, not a mapping")
    return FrontMatter(meta, body)


def _strip_comments(body: str) -> str:
    """Drops ``<!-- ... -->`` comments in one pass; an unclosed one hides the rest, as in a browser."""
    out, i = [], 0
    while True:
        j = body.find("<!--", i)
        if j < 0:
            out.append(body[i:])
            break
        out.append(body[i:j] + " ")
        k = body.find("-->", j + 4)
        if k < 0:
            break
        i = k + 3
    return "".join(out)


def _strip_fences(lines: list[str]) -> list[str]:
    """Drops fenced code blocks; a fence with no closing line stays as text."""
    last = {m: max((i for i, ln in enumerate(lines) if ln.startswith(m)), default=-1) for m in ("```", "~~~")}
    keep, fence = [], None
    for i, ln in enumerate(lines):
        if fence is not None:
            if ln.startswith(fence):
                fence = None
            continue
        marker = "```" if ln.startswith("```") else "~~~" if ln.startswith("~~~") else None
        if marker is not None and last[marker] > i:
            fence = marker
            continue
        keep.append(ln)
    return keep


def prose_of(body: str) -> str:
    """Markdown body minus code, tables, headings, comments and template lines."""
    keep = []
    for line in _strip_fences(_strip_comments(body).splitlines()):
        s = line.strip()
        if not s or s.startswith(("#", "|", ">")) or _BOILERPLATE_LINE.search(s):
            continue
        keep.append(s)
    prose = " ".join(keep)
    prose = re.sub(r"!?\[([^\[\]]*)\]\([^()]*\)", r"\1", prose)  # links count as their text
    return re.sub(r"`[^`]*`", " ", prose)


def word_count(prose: str) -> int:
    return len(re.findall(r"[A-Za-z][A-Za-z'-]*", prose))


def datasets_in_text(text: str) -> tuple[str, ...]:
    """Known dataset names and "trained on <Name>" phrases found in ``text``."""
    found: list[str] = []
    rest = text
    for rx, name in _KNOWN_RE:  # most specific first, then blank out the match
        if rx.search(rest):
            found.append(name)
            rest = rx.sub(" ", rest)
    for m in _TRAINED_ON.finditer(text):
        words = m.group(1).split()
        if words[0] not in _NOT_NAMES and not any(rx.search(m.group(1)) for rx, _ in _KNOWN_RE):
            found.append("_".join(words).lower())
    return tuple(dict.fromkeys(found))


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)] if str(value).strip() else []


def assess_documentation(card_text: str | None, config: dict | None) -> Documentation:
    """Scores how undocumented a model is (see the module docstring for weights).

    Args:
        card_text: the README's text, or None when the repo has no README.
        config: the parsed ``config.json``, or None.

    Returns:
        A :class:`Documentation`; malformed front matter is a reason, never an error.
    """
    reasons: list[str] = []
    score = 0.0
    meta: dict | None = None
    prose = ""
    if card_text is not None and len(card_text) > MAX_CARD_BYTES:
        reasons.append(f"model card over {MAX_CARD_BYTES} characters; only the start was read")
        card_text = card_text[:MAX_CARD_BYTES]
    if card_text is None or not card_text.strip():
        score += WEIGHTS["boilerplate"] + WEIGHTS["little_prose"]
        reasons.append("no model card (README.md)")
    else:
        fm = split_front_matter(card_text)
        meta = fm.meta
        if fm.error:
            reasons.append(fm.error)
        prose = prose_of(fm.body)
        words = word_count(prose)
        lowered = fm.body.lower()
        if not fm.body.strip():
            score += WEIGHTS["boilerplate"]
            reasons.append("model card is only YAML front matter")
        elif words == 0:
            score += WEIGHTS["boilerplate"]
            reasons.append("model card has no prose beyond headings and template text")
        elif any(m in lowered for m in BOILERPLATE_MARKERS) and words < MIN_PROSE_WORDS:
            score += WEIGHTS["boilerplate"]
            reasons.append("model card is auto-generated boilerplate")
        if words < MIN_PROSE_WORDS:
            score += WEIGHTS["little_prose"]
            reasons.append(f"only {words} words of prose (fewer than {MIN_PROSE_WORDS})")
    meta_datasets = _as_list((meta or {}).get("datasets"))
    if not meta_datasets:
        score += WEIGHTS["no_datasets_metadata"]
        reasons.append("no `datasets:` in the card metadata")
    if not has_label_names(config):
        score += WEIGHTS["no_label_names"]
        reasons.append("config.json names no classes (no label_names or id2label)")
    prose_datasets = datasets_in_text(prose)
    if not prose_datasets:
        score += WEIGHTS["no_dataset_in_prose"]
        reasons.append("the card's prose names no training dataset")
    score = round(min(1.0, score), 4)
    datasets = tuple(dict.fromkeys([*meta_datasets, *prose_datasets]))
    return Documentation(score, score >= UNDOCUMENTED_THRESHOLD, tuple(reasons), datasets)
