"""KD methods by name: `METHODS[name]` is a Distiller class, one file per method."""

from __future__ import annotations

from kdlib.methods import ce, kd, label_smoothing, pskd, rco, wsl  # noqa: F401  (registers)
from kdlib.methods.base import METHODS, Distiller, MethodContext, StepOutput, TeacherRoute

__all__ = ["METHODS", "Distiller", "MethodContext", "StepOutput", "TeacherRoute"]
