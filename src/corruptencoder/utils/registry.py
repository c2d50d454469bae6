"""Registries of the three extension axes: contrastive methods, attacks and defences.

An entry joins its registry by being a module of the registry's package that registers itself
(``@ATTACKS.register``), or a plugin: a distribution that declares an entry point in the group
``corruptencoder.<kind>s`` (e.g. ``corruptencoder.attacks``) pointing at such a module. Modules are
imported on the first look-up, so listing the CLI's verbs never imports an axis it does not use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from corruptencoder.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry for one axis; ``T`` is what an entry is (a class, usually)."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, entry: T) -> T:
        """Class decorator: register under the class's ``name`` attribute."""
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a non-empty 'name' class attribute to register")
        self.add(name, entry)
        return entry

    def add(self, name: str, entry: T) -> None:
        old = self._entries.get(name)
        if old is not None and old is not entry and _qualname(old) != _qualname(entry):
            raise ValueError(f"{self.kind} {name!r} is registered twice ({_qualname(old)}, {_qualname(entry)})")
        self._entries[name] = entry

    def module_names(self) -> list[str]:
        """Modules of the registry's package, without importing them (cheap, for help texts)."""
        pkg = importlib.import_module(self.package)
        return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for name in self.module_names():
            importlib.import_module(f"{self.package}.{name}")
        for ep in importlib.metadata.entry_points(group=f"corruptencoder.{self.kind}s"):
            ep.load()

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"{self.kind} {name!r} is unknown; use one of {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self.load()
        return sorted(self._entries.items())

    def where(self, test: Callable[[T], bool]) -> list[str]:
        return [n for n, e in self.items() if test(e)]


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
