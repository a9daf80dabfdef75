"""The base of every named config section (a dataset, a model, a method).

A section is `{name: <registry key>, ...params}`; the registry entry's `Params` class (a
subclass of `Spec`) declares and documents the params. Unknown keys are refused.

Config models name such a section by its kind (`Named("method")`) and know no registry: a section is
checked against its entry's `Params` when the validation context carries a resolver, which
`kdlib.validation.load_config` and `validate_config` give; without one it is kept as given, a
`NamedSection`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SerializeAsAny, ValidationInfo
from pydantic_core import PydanticCustomError


class Spec(BaseModel):
    """A registry key plus the parameters of that entry."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    name: str


class Section(BaseModel):
    """A plain config section: documented fields, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class NamedSection(Spec):
    """A named section whose params have not been checked against its registry entry yet."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


RESOLVER = "kdlib.resolver"  # the validation context's key: (kind, {name, ...params}, context) -> Spec


def Named(kind: str) -> Any:  # noqa: N802  (a type)
    """The type of a named section of `kind` ("data", "model", "method")."""

    def validate(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Spec) and not isinstance(value, NamedSection):
            return value  # checked already
        if isinstance(value, Spec):
            value = value.model_dump()
        if isinstance(value, str):
            value = {"name": value}
        resolve: Callable | None = (info.context or {}).get(RESOLVER)
        if resolve is not None:
            return resolve(kind, value, info.context)
        if not isinstance(value, dict) or "name" not in value:
            raise PydanticCustomError("missing_name", "needs a `name`: the {kind} to use", {"kind": kind})
        return NamedSection.model_validate(value)

    return Annotated[SerializeAsAny[Spec], BeforeValidator(validate)]
