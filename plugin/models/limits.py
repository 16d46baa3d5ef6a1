"""Bounds on every untrusted input: sizes, JSON shape, class counts, image sizes.

Hub data is hostile until validated. Each limit here is checked *before* the
memory or time it protects is spent, and a refusal names the limit and its
value, so a scan can record it and retry the repo once the limit is raised.
"""
from __future__ import annotations

import json
import re

from plugin.core.errors import DomainFinderError

MAX_CONFIG_BYTES = 4 * 2**20  # 21k label names fit in well under 1 MiB
MAX_CARD_BYTES = 512 * 2**10  # the longest real model cards are tens of KB
MAX_JSON_DEPTH = 32
MAX_JSON_INT_DIGITS = 20  # int64 fits in 19 digits
MAX_JSON_STRING = 64 * 2**10
MAX_TREE_NODES = 200_000  # values in a parsed config or card metadata (aliases counted each time)
MAX_NUM_CLASSES = 65_536  # ImageNet-22k has 21,843
MAX_INPUT_SIDE = 640  # pixels; timm classifiers top out at 512-600, and 1024x1024 needed 7 GB
MAX_IN_CHANS = 16
# Zip members inflate to at most this many times the archive's size (plus a floor):
# torch writes STORED members, so an honest checkpoint inflates about 1:1.
MAX_INFLATE_RATIO = 4
MIN_INFLATE_ALLOWANCE = 64 * 2**20


class ResourceLimitError(DomainFinderError, ValueError):
    """An untrusted input is over a local limit; nothing beyond the limit was read or allocated.

    Attributes:
        limit: the limit's name (``max_bytes``, ``max_num_classes``...).
        value: the limit's value when it refused, recorded so that raising it
            makes the input eligible again.
    """

    def __init__(self, message: str, limit: str = "", value: int | float | None = None):
        super().__init__(message)
        self.limit, self.value = limit, value


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def _check_depth(text: str, where: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuses nesting deeper than ``max_depth`` before parsing (the parser would recurse), in linear time."""
    import numpy as np

    rest = _JSON_STRING.sub("", text).encode("ascii", "replace")
    b = np.frombuffer(rest, dtype=np.uint8)
    step = ((b == ord("[")) | (b == ord("{"))).astype(np.int32) - ((b == ord("]")) | (b == ord("}")))
    if step.size and int(np.cumsum(step).max()) > max_depth:
        raise ResourceLimitError(f"{where}: JSON nested deeper than {max_depth} levels", "max_json_depth", max_depth)


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ResourceLimitError(f"JSON integer with {len(s)} digits (limit {MAX_JSON_INT_DIGITS})",
                                 "max_json_int_digits", MAX_JSON_INT_DIGITS)
    return int(s)


def _parse_constant(name: str):
    raise ValueError(f"JSON constant {name} is not allowed")


def safe_json_loads(text: str, where: str = "JSON", *, max_chars: int = MAX_CONFIG_BYTES,
                    max_depth: int = MAX_JSON_DEPTH, max_nodes: int = MAX_TREE_NODES):
    """``json.loads`` with bounded size, depth, integer digits and string length.

    Raises:
        ResourceLimitError: a bound is exceeded (the bound is named).
        ValueError: not valid JSON (``json.JSONDecodeError``).
    """
    if len(text) > max_chars:
        raise ResourceLimitError(f"{where}: {len(text)} characters, over the {max_chars} limit",
                                 "max_config_bytes", max_chars)
    _check_depth(text, where, max_depth)
    try:
        value = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except ResourceLimitError as e:
        raise ResourceLimitError(f"{where}: {e}", e.limit, e.value) from None
    check_tree(value, where, max_nodes=max_nodes, max_depth=max_depth)
    return value


def check_tree(value, where: str = "value", max_nodes: int = MAX_TREE_NODES, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuses a parsed tree (JSON or YAML) that is too big, too deep or has huge strings.

    Iterative, and counts a shared node (a YAML alias) every time it is
    reached, so an alias bomb is refused after ``max_nodes`` steps instead of
    expanding.
    """
    stack = [(value, 0)]
    nodes = 0
    while stack:
        v, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise ResourceLimitError(f"{where}: more than {max_nodes} values", "max_tree_nodes", max_nodes)
        if depth > max_depth:
            raise ResourceLimitError(f"{where}: nested deeper than {max_depth} levels", "max_json_depth", max_depth)
        if isinstance(v, str):
            if len(v) > MAX_JSON_STRING:
                raise ResourceLimitError(f"{where}: a string of {len(v)} characters (limit {MAX_JSON_STRING})",
                                         "max_json_string", MAX_JSON_STRING)
        elif isinstance(v, dict):
            stack.extend((x, depth + 1) for kv in v.items() for x in kv)
        elif isinstance(v, (list, tuple)):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**MAX_JSON_INT_DIGITS:
            raise ResourceLimitError(f"{where}: an integer over {MAX_JSON_INT_DIGITS} digits",
                                     "max_json_int_digits", MAX_JSON_INT_DIGITS)


def max_inflated(archive_size: int) -> int:
    """The most bytes a zip of ``archive_size`` bytes may inflate to."""
    return max(MIN_INFLATE_ALLOWANCE, MAX_INFLATE_RATIO * archive_size)
