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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SerializeAsAny, ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError


class Spec(BaseModel):
    """A registry key plus the parameters of that entry."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    name: str = ""  # the registry key; a method's Params leave it to the config that names the method


class Section(BaseModel):
    """A plain config section: documented fields, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class NamedSection(Spec):
    """A named section whose params have not been checked against its registry entry yet."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


RESOLVER = "kdlib.resolver"  # the validation context's key: (kind, {name, ...params}, context) -> Spec
FOLDER = "kdlib.folder"  # the validation context's key: the folder that relative paths start from


def local_path(path: str, folder: str | Path | None = None) -> str:
    """`path` made absolute: a relative one starts from `folder` (the config file's), else the current folder."""
    return str((Path(folder or Path.cwd()) / Path(path).expanduser()).resolve())


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
