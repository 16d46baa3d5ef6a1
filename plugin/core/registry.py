"""One small generic registry for named, pluggable parts.

Corpora, auxiliary loaders, model sources and checks each keep one
:class:`Registry`. Production code registers its parts with the decorator;
parts that live outside production (the demo) register through a Python
entry-point group, so production never imports them. An unknown name raises
:class:`UnknownNameError` listing every valid name (compare timm's
``create_model``).
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from plugin.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind.

    Args:
        kind: what the names name, for error messages ("check", "corpus"...).
        group: an entry-point group loaded on first lookup, or None.
    """

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = group is None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Registers ``obj`` as ``name``; without ``obj``, returns a decorator."""
        if obj is not None:
            self._items[name] = obj
            return obj

        def deco(o: T) -> T:
            self._items[name] = o
            return o

        return deco

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            self._items.setdefault(ep.name, ep.load())

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            UnknownNameError: the message lists the valid names.
        """
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # Mapping-style access, so tests can monkeypatch an entry in and out.
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, obj: T) -> None:
        self._items[name] = obj

    def __delitem__(self, name: str) -> None:
        del self._items[name]
