"""The base of every named config section (a dataset, a model, a method).

A section is `{name: <registry key>, ...params}`; the registry entry's `Params` class (a
subclass of `Spec`) declares and documents the params. Unknown keys are refused.

Config models name such a section by its kind (`Named("method")`) and know no registry: a section is
checked against its entry's `Params` when the validation context carries a resolver, which
`kdlib.validation.load_config` and `validate_config` give; without one it is kept as given, a
`NamedSection`. Paths a config names (its `imports:`, a data file) start from the config file's folder,
which the context carries too (`FOLDER`; the current folder without it), and are kept absolute.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

# Numbers must be finite (`.inf` and `nan` are refused where a number is expected), and true/false is no number:
# pydantic would read `lr: true` as 1.0.
_STRICT = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True, allow_inf_nan=False)


def _number_kind(annotation: Any) -> str | None:
    """"a number" or "an integer" when a field of this type takes numbers but not true/false, else None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _number_kind(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if any(a is bool or a is Any or typing.get_origin(a) is typing.Literal for a in members):
            return None
        kinds = {_number_kind(a) for a in members} - {None}
        return "a number" if "a number" in kinds else kinds.pop() if kinds else None
    return {int: "an integer", float: "a number"}.get(annotation)


def bools_for_numbers(annotation: Any, value: Any, loc: tuple = ()) -> list[tuple[tuple, str]]:
    """Where `value` puts true/false in place of a number of `annotation` (lists and tuples looked into):
    (location, the type expected) pairs."""
    if isinstance(value, bool):
        kind = _number_kind(annotation)
        return [(loc, kind)] if kind else []
    if not isinstance(value, list | tuple):
        return []
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return bools_for_numbers(args[0], value, loc)
    if origin in (typing.Union, types.UnionType):
        return next((found for a in args if (found := bools_for_numbers(a, value, loc))), [])
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return [f for i, v in enumerate(value) for f in bools_for_numbers(args[0], v, (*loc, i))]
    if origin is tuple:
        return [f for i, (a, v) in enumerate(zip(args, value, strict=False)) for f in bools_for_numbers(a, v, (*loc, i))]
    return []


class _Checked(BaseModel):
    model_config = _STRICT

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        found = [
            (loc, kind)
            for key, field in cls.model_fields.items()
            if key in data
            for loc, kind in bools_for_numbers(field.annotation, data[key], (key,))
        ]
        if found:
            raise ValidationError.from_exception_data(cls.__name__, [
                InitErrorDetails(
                    type=PydanticCustomError("bool_for_number", "expected {kind}, got {value}",
                                             {"kind": kind, "value": shown(_at(data, loc))}),
                    loc=loc,
                    input=_at(data, loc),
                )
                for loc, kind in found
            ])
        return data


def shown(value: Any, width: int = 60) -> str:
    """A value as a config file would write it, for messages: true, null, 'text', [1, 2], cut at `width`."""
    text = {True: "true", False: "false", None: "null"}[value] if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _at(data: Any, loc: tuple) -> Any:
    for key in loc:
        data = data[key]
    return data


class Spec(_Checked):
    """A registry key plus the parameters of that entry."""

    name: str = ""  # the registry key; a method's Params leave it to the config that names the method


class Section(_Checked):
    """A plain config section: documented fields, unknown keys refused."""


class NamedSection(Spec):
    """A named section whose params have not been checked against its registry entry yet."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)


MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit unsigned; torch takes them too

RESOLVER = "kdlib.resolver"  # the validation context's key: (kind, {name, ...params}, context) -> Spec
FOLDER = "kdlib.folder"  # the validation context's key: the folder that relative paths start from
STORED = "kdlib.stored"  # the validation context's key: true for a stored run's config, written by older code


def user_path(path: str) -> Path:
    """`path` with a leading `~` or `~user` expanded; kept as written for a user this machine has not (then it
    names no file, which the field's check says)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "Could not determine home directory"
        return Path(path)


def local_path(path: str, folder: str | Path | None = None) -> str:
    """`path` made absolute: a relative one starts from `folder` (the config file's), else the current folder."""
    return str((Path(folder or Path.cwd()) / user_path(path)).resolve())


def context_folder(info: ValidationInfo) -> Path | None:
    """The folder of the config being validated, when the context names one."""
    return (info.context or {}).get(FOLDER)


def is_file_import(entry: str) -> bool:
    """Whether an `imports:` entry is a Python file (`mine.py`, `lib/mine`) rather than a module name."""
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def resolve_in(registry, value: Any, context: dict | None = None) -> Spec:
    """A named section checked against the Params of the entry its name picks in `registry`."""
    if not isinstance(value, dict) or "name" not in value:
        raise PydanticCustomError("missing_name", "needs a `name`: one of {names}", {"names": ", ".join(registry.names())})
    if not isinstance(value["name"], str):
        error = InitErrorDetails(
            type=PydanticCustomError("name_type", "expected a name (text): one of {names}",
                                     {"names": ", ".join(registry.names())}),
            loc=("name",),
            input=value["name"],
        )
        raise ValidationError.from_exception_data("name", [error])
    if value["name"] not in registry:
        error = InitErrorDetails(
            type=PydanticCustomError("unknown_name", registry.unknown_message(value["name"])),
            loc=("name",),
            input=value["name"],
        )
        raise ValidationError.from_exception_data("unknown name", [error])
    return registry.get(value["name"]).Params.model_validate(value, context=context)


def Named(kind: str, registry=None) -> Any:  # noqa: N802  (a type)
    """The type of a named section of `kind` ("data", "model", "method"). Checked against `registry` when
    given (a data set's own sections: a domain pair's sides), else by the context's resolver if any."""

    def validate(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Spec) and not isinstance(value, NamedSection):
            return value  # checked already
        if isinstance(value, Spec):
            value = value.model_dump()
        if isinstance(value, str):
            value = {"name": value}
        if registry is not None:
            return resolve_in(registry, value, info.context)
        resolve: Callable | None = (info.context or {}).get(RESOLVER)
        if resolve is not None:
            return resolve(kind, value, info.context)
        if not isinstance(value, dict) or "name" not in value:
            raise PydanticCustomError("missing_name", "needs a `name`: the {kind} to use", {"kind": kind})
        return NamedSection.model_validate(value)

    return Annotated[SerializeAsAny[Spec], BeforeValidator(validate)]
