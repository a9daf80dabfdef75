"""KD methods by name: `METHODS[name]` is a Distiller class, one file per method, the file's stem its key.

The method contract is in `kdlib.methods.base`; the registry imports this package's modules on first use.
"""

from __future__ import annotations

from kdlib.methods.base import METHODS, Distiller, MethodContext, StepOutput, TeacherRoute, Value

__all__ = ["METHODS", "Distiller", "MethodContext", "StepOutput", "TeacherRoute", "Value"]
