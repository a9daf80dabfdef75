"""kdlib: knowledge distillation runs in the background, and the store every view reads.

import kdlib
handle = kdlib.launch("configs/quickstart.yaml")      # a background process; returns at once
handle.wait(); handle.metrics()                         # per-epoch scalars as a pandas frame
run = kdlib.load_run(handle.run_id)                     # config, metrics and per-sample arrays

The names below are imported on first use (PEP 562), so `import kdlib` and the CLI's commands that
only read the store start without importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"  # the one place it is set: pyproject.toml reads it from here

_EXPORTS = {
    "METHODS": "kdlib.methods",
    "ConfigError": "kdlib.config",
    "LoadedRun": "kdlib.views",
    "RunConfig": "kdlib.config",
    "RunHandle": "kdlib.runner",
    "RunStore": "kdlib.store",
    "config_from": "kdlib.validation",
    "launch": "kdlib.runner",
    "load_config": "kdlib.validation",
    "load_run": "kdlib.views",
    "register_dataset": "kdlib.plugins",
    "register_method": "kdlib.plugins",
    "register_model": "kdlib.plugins",
    "resume": "kdlib.runner",
    "validate_config": "kdlib.validation",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports them
    from kdlib.config import ConfigError, RunConfig  # noqa: F401
    from kdlib.methods import METHODS  # noqa: F401
    from kdlib.plugins import register_dataset, register_method, register_model  # noqa: F401
    from kdlib.runner import RunHandle, launch, resume  # noqa: F401
    from kdlib.store import RunStore  # noqa: F401
    from kdlib.validation import config_from, load_config, validate_config  # noqa: F401
    from kdlib.views import LoadedRun, load_run  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # `kdlib.viz` after a bare `import kdlib`
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
