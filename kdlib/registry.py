"""One registry type for everything a YAML file can name: datasets, models, methods.

A registry finds its entries itself: the first lookup imports every module of its package, so a
new file in `kdlib/methods/` (or `data/`, `models/`) is found with no other edit. Data sets and
models register by decorator (a file may hold several); a method is the one `Distiller` subclass
its file defines, and its key is the file's stem, written nowhere else.

A name that is not registered fails with the closest valid names, so a typo in a config
reads `'pskd2' is not a method; did you mean 'pskd'?` rather than a KeyError. A name registered twice
by two definitions is an error that names both; the same definition again (a file imported twice, a
notebook cell run again) replaces the first. The first lookup also loads installed plugins
(entry-point group `kdlib.plugins`: importing the module an entry point names registers what it defines).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
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
            old = self._entries.get(name)
            if old is not None and old is not entry and not same_definition(old, entry):
                raise ValueError(
                    f"{self.kind} {name!r} is registered twice: by {definition(old)} and by {definition(entry)}; "
                    "rename one of them"
                )
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
        load_entry_points()

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


ENTRY_POINTS = "kdlib.plugins"
_plugins_loaded = False


def load_entry_points() -> None:
    """Import, once per process, every installed plugin (entry-point group `kdlib.plugins`); a plugin that
    fails to import is a warning naming it, not a crash."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINTS):
        try:
            point.load()
        except Exception as error:  # noqa: BLE001 - someone else's package must not stop kdlib
            warnings.warn(
                f"kdlib plugin {point.name!r} ({point.value}) could not be loaded: {type(error).__name__}: {error}",
                stacklevel=2,
            )


def _defined(entry: object) -> object:
    """The user's own function or class behind an entry (kdlib.plugins wraps functions)."""
    return getattr(entry, "__wrapped__", entry)


def same_definition(a: object, b: object) -> bool:
    """Whether two entries are one definition met twice: the same name in the same module or source file."""
    a, b = _defined(a), _defined(b)
    if getattr(a, "__qualname__", None) != getattr(b, "__qualname__", None):
        return False
    return getattr(a, "__module__", None) == getattr(b, "__module__", None) or _source(a) == _source(b) is not None


def _source(entry: object) -> str | None:
    try:
        return inspect.getsourcefile(entry)
    except (TypeError, OSError):
        return None


def definition(entry: object) -> str:
    """`module.name (file:line)`, for errors that point at code."""
    entry = _defined(entry)
    where = _source(entry)
    line = getattr(getattr(entry, "__code__", None), "co_firstlineno", None)
    at = f" ({where}{f':{line}' if line else ''})" if where else ""
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', repr(entry))}{at}"


def summary(entry: object) -> str:
    """An entry's description in one paragraph: its own docstring's first paragraph (a user's function or
    class), else its module's (a built-in method file opens with the paper and the equation)."""
    own = vars(entry).get("__doc__") if isinstance(entry, type) else getattr(entry, "__doc__", None)
    module = sys.modules.get(getattr(entry, "__module__", ""))
    doc = inspect.cleandoc(own or (module.__doc__ if module else None) or "")
    return " ".join(doc.split("\n\n")[0].split())
