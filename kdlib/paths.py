"""Where kdlib keeps what it writes: `$KDLIB_HOME` (default `./runs`)."""

from __future__ import annotations

import os
from pathlib import Path


def kdlib_home(home: str | os.PathLike | None = None) -> Path:
    path = Path(home or os.environ.get("KDLIB_HOME") or "runs").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(home: str | os.PathLike | None = None) -> Path:
    path = kdlib_home(home) / "cache"
    path.mkdir(exist_ok=True)
    return path
