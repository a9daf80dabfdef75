"""kdlib: knowledge distillation runs in the background, and the store every view reads.

import kdlib
handle = kdlib.launch("configs/quickstart.yaml")      # a background process; returns at once
handle.wait(); handle.metrics()                         # per-epoch scalars as a pandas frame
run = kdlib.load_run(handle.run_id)                     # config, metrics and per-sample arrays
"""

from __future__ import annotations

from kdlib.config import ConfigError, RunConfig
from kdlib.methods import METHODS
from kdlib.runner import RunHandle, launch, resume
from kdlib.store import RunStore
from kdlib.validation import config_from, load_config, validate_config
from kdlib.views import LoadedRun, load_run

__all__ = [
    "METHODS",
    "ConfigError",
    "LoadedRun",
    "RunConfig",
    "RunHandle",
    "RunStore",
    "config_from",
    "launch",
    "load_config",
    "load_run",
    "resume",
    "validate_config",
]
