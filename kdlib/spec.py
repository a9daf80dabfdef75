"""The base of every named config section (a dataset, a model, a method).

A section is `{name: <registry key>, ...params}`; the registry entry's `Params` class (a
subclass of `Spec`) declares and documents the params. Unknown keys are refused.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A registry key plus the parameters of that entry."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    name: str


class Section(BaseModel):
    """A plain config section: documented fields, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)
