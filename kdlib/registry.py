"""One registry type for everything a YAML file can name: datasets, models, methods.

A registry finds its entries itself: the first lookup imports every module of its package, so a
new file in `kdlib/methods/` (or `data/`, `models/`) is found with no other edit. Data sets and
models register by decorator (a file may hold several); a method is the one `Distiller` subclass
its file defines, and its key is the file's stem, written nowhere else.

A name that is not registered fails with the closest valid names, so a typo in a config
reads `'pskd2' is not a method; did you mean 'pskd'?` rather than a KeyError.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry has; the message carries the suggestions."""

    def __str__(self) -> str:
        return self.args[0]


class Registry(Generic[T]):
    """Maps names to classes (or factories); `kind` is the noun used in error messages.

    `package`: the modules whose entries are found on first use. `one_per_file`: a base class;
    the single subclass of it that a module of the package defines is registered under the
    module's stem (unless it registered itself under another name).
    """

    def __init__(self, kind: str, package: str | None = None, one_per_file: type | None = None) -> None:
        self.kind, self.package, self.one_per_file = kind, package, one_per_file
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # first, so that a module that looks a name up while imported cannot recurse
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_") or info.name == "base":
                continue
            module = importlib.import_module(f"{self.package}.{info.name}")
            if self.one_per_file is not None:
                self._register_defined(module, info.name)

    def _register_defined(self, module, stem: str) -> None:
        defined = [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, self.one_per_file) and value.__module__ == module.__name__
        ]
        if len(defined) > 1:
            names = ", ".join(cls.__name__ for cls in defined)
            raise TypeError(f"{module.__file__}: one {self.kind} per file, found {names}; move the others to files of their own")
        if defined and not any(entry is defined[0] for entry in self._entries.values()):
            self.register(stem)(defined[0])

    def get(self, name: str) -> T:
        self._discover()
        if name in self._entries:
            return self._entries[name]
        raise UnknownNameError(self.unknown_message(name))

    def key_of(self, entry: T) -> str:
        """The name an entry is registered under."""
        self._discover()
        return next(name for name, value in self._entries.items() if value is entry)

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        choices = f"choose one of: {', '.join(self.names())}"
        return f"{name!r} is not a {self.kind}; {hint or choices}"

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]
