"""Your own data sets, models and methods, by name, everywhere a built-in one works.

    @kdlib.register_model("tinynet")
    def tinynet(input_shape, num_classes, hidden: int = 16) -> nn.Module: ...

    @kdlib.register_dataset("breast_cancer")
    def breast_cancer(standardize: bool = True): ...        # (x, y), (x, y, x_test, y_test), ...

    @kdlib.register_method("confident_kd")
    class ConfidentKD(Distiller): ...                       # the method contract (kdlib.methods.base)

A function's keyword arguments become its config section's fields, validated by a pydantic model made
from the signature: the type from the annotation (else the default's), the default, and the help from
the docstring (a line `name: text`, Google-style `Args:`, numpydoc `Parameters` or `:param name:`);
the docstring's first line describes the section. The app's Train form and the widgets build their
controls from these fields, as for built-in entries. A data function also gets the split fields
(`val_fraction`, `test_fraction`, `split_seed`; name one in the signature to receive it too), and its
result becomes splits with sample indices (`kdlib.data.arrays.as_bundle`). A model function gets
`input_shape, num_classes` first; a model without `feature_taps` gets an `embedding` tap when it is an
`nn.Sequential` ending in a linear layer. A class written to the built-in contract (`Params` and
`load`, or `Params` and `Model(params, input_shape, num_classes)`) is registered as it is.

A config's `imports:` names the files (or modules) that register them; `import_user_code` imports them
in every process that reads the config, once per process. Installed packages register through the
entry-point group `kdlib.plugins` (`kdlib.registry.load_entry_points`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import threading
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import Field, create_model
from pydantic.fields import FieldInfo
from torch import nn

from kdlib.config import ConfigError
from kdlib.data.arrays import as_bundle
from kdlib.data.base import DATASETS
from kdlib.data.params import SplitParams
from kdlib.methods.base import METHODS, Distiller
from kdlib.models.base import MODELS
from kdlib.registry import Registry, definition, load_entry_points
from kdlib.spec import Spec, is_file_import, local_path

__all__ = ["import_user_code", "load_entry_points", "register_dataset", "register_method", "register_model"]

F = typing.TypeVar("F")
_SPLIT_FIELDS = tuple(n for n in SplitParams.model_fields if n != "name")


def register_model(name: str) -> Callable[[F], F]:
    """Register `fn(input_shape, num_classes, **params) -> nn.Module` as model `name`; returns `fn` unchanged."""

    def decorate(fn: F) -> F:
        if _follows_contract(fn):
            return _register(MODELS, name, fn)
        params = params_model(fn, Spec, name, skip=2, what=f"model {name!r}")
        fields = _passed(fn, params)

        @functools.wraps(fn)
        def build(spec: Spec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
            model = fn(tuple(input_shape), num_classes, **{k: getattr(spec, k) for k in fields})
            if not isinstance(model, nn.Module):
                raise TypeError(f"model {name!r} ({definition(fn)}) returned {type(model).__name__}, not an nn.Module")
            if not hasattr(model, "feature_taps"):
                model.feature_taps = default_taps(model)
            return model

        build.Params = params
        _register(MODELS, name, build)
        return fn

    return decorate


def register_dataset(name: str) -> Callable[[F], F]:
    """Register `fn(**params)` returning arrays, datasets or a DataBundle as data set `name`; returns `fn` unchanged."""

    def decorate(fn: F) -> F:
        if _follows_contract(fn, "load"):
            return _register(DATASETS, name, fn)
        params = params_model(fn, SplitParams, name, skip=0, what=f"data set {name!r}", keep=_SPLIT_FIELDS)
        fields = _passed(fn, params)

        def load(spec: SplitParams):
            return as_bundle(fn(**{k: getattr(spec, k) for k in fields}), spec, f"data {name!r} ({definition(fn)})")

        entry = type(
            fn.__name__,
            (),
            {
                "Params": params,
                "load": staticmethod(load),
                "__wrapped__": fn,
                "__module__": fn.__module__,
                "__qualname__": fn.__qualname__,
                "__doc__": fn.__doc__,
            },
        )
        _register(DATASETS, name, entry)
        return fn

    return decorate


def register_method(name: str) -> Callable[[F], F]:
    """Register a `Distiller` subclass (the method contract: `Params`, a `loss` hook) as method `name`."""

    def decorate(cls: F) -> F:
        if not (isinstance(cls, type) and issubclass(cls, Distiller)):
            raise TypeError(f"method {name!r}: register a subclass of kdlib.methods.Distiller, not {cls!r}")
        params = getattr(cls, "Params", None)
        if not (isinstance(params, type) and issubclass(params, Spec)):
            raise TypeError(
                f"method {name!r}: {cls.__qualname__}.Params must be a subclass of kdlib.spec.Spec (its fields are "
                "the method's config)"
            )
        if cls.loss is Distiller.loss and cls.forward is Distiller.forward:
            raise TypeError(
                f"method {name!r}: {cls.__qualname__} defines no loss(batch, student_logits, teacher_logits)"
            )
        return _register(METHODS, name, cls)

    return decorate


def _register(registry: Registry, name: str, entry: F) -> F:
    registry.names()  # kdlib's own entries first, so a name taken by one of them is refused here, naming both
    return registry.register(name)(entry)


def _follows_contract(entry: Any, hook: str | None = None) -> bool:
    """A class written to the built-in contract: `Params` (a Spec) and, for data sets, `load`."""
    params = getattr(entry, "Params", None)
    return isinstance(params, type) and issubclass(params, Spec) and (hook is None or hasattr(entry, hook))


# --- a pydantic model from a signature ------------------------------------------------------------------


def params_model(
    fn: Callable, base: type[Spec], name: str, skip: int, what: str, keep: tuple[str, ...] = ()
) -> type[Spec]:
    """The config section of `fn`: a field per argument after the first `skip`, and `name` fixed to `name`.

    Arguments named like a field of `base` are refused unless in `keep` (then the function's definition wins).
    """
    signature = inspect.signature(fn)
    target = fn.__init__ if isinstance(fn, type) else fn
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: the default's type serves
        hints = {}
    positional = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < skip:
        raise TypeError(f"{what}: {definition(fn)} takes input_shape, num_classes first")
    helps = field_help(fn.__doc__ or (target.__doc__ if target is not fn else None))
    fields: dict[str, Any] = {"name": (Literal[name], name)}
    for p in list(signature.parameters.values())[skip:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise TypeError(f"{what}: argument {p.name!r} is positional-only; kdlib passes config fields by name")
        if p.name == "name" or (p.name in base.model_fields and p.name not in keep):
            raise TypeError(f"{what}: argument {p.name!r} is a field kdlib adds to every such section; rename it")
        fields[p.name] = _field(p, hints.get(p.name, p.annotation), helps.get(p.name))
    summary = inspect.cleandoc(fn.__doc__ or "").split("\n")[0] or None
    model_name = "".join(part.title() for part in re.split(r"\W|_", name) if part) + "Params"
    return create_model(model_name, __base__=base, __module__=fn.__module__, __doc__=summary, **fields)


def _field(p: inspect.Parameter, annotation: Any, help_text: str | None) -> tuple[Any, FieldInfo]:
    has_default = p.default is not p.empty
    if annotation is p.empty or isinstance(annotation, str):
        annotation = type(p.default) if has_default and p.default is not None else Any
    if isinstance(p.default, FieldInfo):  # `x: int = Field(16, ge=1)`: the user's field, with the docstring's help
        info = p.default
        return annotation, FieldInfo.merge_field_infos(info, description=info.description or help_text)
    return annotation, Field(p.default if has_default else ..., description=help_text)


def _passed(fn: Callable, params: type[Spec]) -> list[str]:
    """The fields a call of `fn` gets: those its signature names."""
    return [n for n in inspect.signature(fn).parameters if n in params.model_fields]


_SPHINX = re.compile(r":param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)")
_ITEM = re.compile(r"\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")


def field_help(doc: str | None) -> dict[str, str]:
    """Help per argument from a docstring: `name: text` lines (Google-style `Args:` too), numpydoc
    `name : type` followed by indented text, or `:param name: text`; continuation lines are joined."""
    lines = inspect.cleandoc(doc or "").splitlines()
    numpydoc = any(
        line.strip() == "Parameters" and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        for i, line in enumerate(lines)
    )
    found: dict[str, str] = {}
    for i, line in enumerate(lines[1:], start=1):  # the first line is the summary
        sphinx = _SPHINX.fullmatch(line.strip())
        item = sphinx or _ITEM.fullmatch(line.strip())
        if item is None:
            continue
        indent = len(line) - len(line.lstrip())
        more = []
        for following in lines[i + 1 :]:
            if not following.strip() or len(following) - len(following.lstrip()) <= indent:
                break
            more.append(following.strip())
        text = "" if numpydoc and not sphinx else item[2]  # numpydoc: after the colon comes the type
        found.setdefault(item[1], " ".join([text, *more]).strip())
    return {k: v for k, v in found.items() if v}


def default_taps(model: nn.Module) -> dict[str, str]:
    """An `embedding` tap (the classifier's input) for an nn.Sequential that ends in a linear layer; else none."""
    names = list(dict(model.named_children()))
    if isinstance(model, nn.Sequential) and len(names) >= 2 and isinstance(model[-1], nn.Linear):
        return {"embedding": names[-2]}
    return {}


# --- imports: files and modules a config names ------------------------------------------------------------

_IMPORTED: dict[str, ModuleType] = {}  # resolved file path -> module, once per process
_IMPORTING = threading.RLock()  # the app validates configs from several sessions' threads at once


def import_user_code(imports: Any, folder: str | Path | None = None) -> None:
    """Import each entry of a config's `imports:` (files relative to `folder`, or module names), each file once
    per process; ConfigError naming the entry when it is missing or raises. Other values are left to validation."""
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        return
    for entry in imports:
        if is_file_import(entry):
            import_file(Path(local_path(entry, folder)))
        else:
            _import_module(entry)


def import_file(path: Path) -> ModuleType:
    """The module of a Python file, imported once per process (keyed by its resolved path). It is named by its
    stem when that name finds this file (so `import mine` elsewhere gives the same module), else by stem and hash."""
    with _IMPORTING:
        return _import_file(path, str(path.resolve()))


def _import_file(path: Path, key: str) -> ModuleType:
    if key in _IMPORTED:
        return _IMPORTED[key]
    if not path.is_file():
        raise ConfigError(f"imports: no such file {path}")
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # so that the file can import its neighbours
    name = _module_name(path)
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, key)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[name]
            raise ConfigError(f"imports: {_where(error, key)}: {type(error).__name__}: {error}") from error
    _IMPORTED[key] = module
    return module


def _module_name(path: Path) -> str:
    stem = path.stem
    if stem.isidentifier():
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        if found is None or (found.origin and Path(found.origin).resolve() == path.resolve()):
            return stem
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return re.sub(r"\W", "_", stem) + f"_{digest}"


def _where(error: Exception, path: str) -> str:
    """The file and line of the user's code where the import failed."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}, line {error.lineno}"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == path]
    return f"{path}, line {lines[-1]}" if lines else path


def _import_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as error:
        hint = "; a file needs its .py ending" if isinstance(error, ModuleNotFoundError) and error.name == name else ""
        raise ConfigError(f"imports: {name!r}: {type(error).__name__}: {error}{hint}") from error


def missing_sources(entries: list, listed: list[str]) -> list[str]:
    """What a process must import to find `entries` that `listed` (a config's imports) does not cover: the file
    of a module of no package, else the module's name. kdlib's own entries and those defined in `__main__`
    (a notebook, a script) have none."""
    found = []
    for entry in entries:
        module = sys.modules.get(getattr(getattr(entry, "__wrapped__", entry), "__module__", None) or "")
        if module is None or module.__name__ == "__main__" or module.__name__.split(".")[0] == "kdlib":
            continue
        file = getattr(module, "__file__", None)
        source = str(Path(file).resolve()) if file and not module.__package__ else module.__name__
        if source not in listed and module.__name__ not in listed and source not in found:
            found.append(source)
    return found
