"""KD methods by name: `METHODS[name]` is a Distiller class, one file per method."""

from __future__ import annotations

from kdlib.methods import ce, dfa, kd, label_smoothing, lsskd, prokt, pskd, rco, uda_pkd, wsl  # noqa: F401  (registers)
from kdlib.methods.base import METHODS, Distiller, MethodContext, StepOutput, TeacherRoute

__all__ = ["METHODS", "Distiller", "MethodContext", "StepOutput", "TeacherRoute"]
