"""Where kdlib keeps what it writes: `$KDLIB_HOME` (default `./runs`)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def home_path(home: str | os.PathLike | None = None) -> Path:
    """The kdlib home that `home` (default: $KDLIB_HOME, else ./runs) names, made or not."""
    return Path(home or os.environ.get("KDLIB_HOME") or "runs").expanduser().resolve()


def kdlib_home(home: str | os.PathLike | None = None) -> Path:
    path = home_path(home)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(home: str | os.PathLike | None = None) -> Path:
    path = kdlib_home(home) / "cache"
    path.mkdir(exist_ok=True)
    return path


def temporary_beside(path: Path) -> Path:
    """A name beside `path` that no other process uses, for writing there and then renaming onto `path`.

    Two runs that start together (a notebook launching six) may write the same cache file at once;
    with one shared temporary name the first rename leaves the second without its file.
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
