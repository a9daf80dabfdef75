"""The door of a run: plain data or YAML in, a validated `RunConfig` out, or one line per problem.

`RunConfig` keeps each named section (`data`, `student`, `teacher.model`, `method`, a domain pair's
sides) as a name and params; here every such section is checked against the params class of the
registry entry it names (the validation context carries the resolver), and then the checks that
need the method: a teacher where it needs one, and the teacher-output cache's rules
(`kdlib.teacher_cache`). Before any of that, the config's `imports:` are imported (`kdlib.plugins`), so every
process that reads a config (the CLI, a background worker, a sweep, the app, the widgets) knows the data
sets, models and methods it names; a validated config lists in `imports` the file or module of every
entry it names that is neither kdlib's own nor defined in `__main__`, so a config built in the app or a
notebook from registered entries runs in a worker too.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdlib.config import ConfigError, RunConfig, apply_overrides
from kdlib.data import DATASETS
from kdlib.methods import METHODS
from kdlib.models import MODELS
from kdlib.plugins import import_user_code, missing_sources
from kdlib.registry import Registry
from kdlib.spec import FOLDER, RESOLVER, NamedSection, Spec, resolve_in
from kdlib.teacher_cache import teacher_cache_refusal

REGISTRIES: dict[str, Registry] = {"data": DATASETS, "model": MODELS, "method": METHODS}


def resolve_section(kind: str, value: Any, context: dict) -> Spec:
    """A named section checked against the Params of the registry entry its name picks."""
    return resolve_in(REGISTRIES[kind], value, context)


def method_problems(config: RunConfig) -> list[str]:
    """What the method makes of the rest of the config: a teacher it needs, a cache it cannot use."""
    if METHODS.get(config.method.name).needs_teacher and config.teacher is None:
        return [
            f"teacher: method {config.method.name!r} needs a teacher; add a `teacher:` section "
            "with at least `model: {name: ...}`"
        ]
    refusal = teacher_cache_refusal(config)
    if refusal and (refusal[0] == "augment_draws" or config.teacher.cache.enabled is True):
        return [f"teacher.cache.{refusal[0]}: {refusal[1]}"]
    return []


def validate_config(data: dict, folder: str | Path | None = None) -> RunConfig:
    """A RunConfig from plain data; ConfigError with one line per problem otherwise. Relative paths in it
    (`imports`, data files) start from `folder`: the config file's, else the current folder."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__}")
    folder = Path(folder or Path.cwd()).resolve()
    import_user_code(data.get("imports"), folder)
    try:
        config = RunConfig.model_validate(data, context={RESOLVER: resolve_section, FOLDER: folder})
    except ValidationError as error:
        raise ConfigError(format_errors(error, data)) from None
    if problems := method_problems(config):
        raise ConfigError("\n".join(problems))
    return with_sources(config)


def named_entries(config: RunConfig) -> list:
    """The registry entries a config names: data, student, teacher model, method."""
    models = [config.student] + ([config.teacher.model] if config.teacher else [])
    return [DATASETS.get(config.data.name), *(MODELS.get(m.name) for m in models), METHODS.get(config.method.name)]


def with_sources(config: RunConfig) -> RunConfig:
    """The config with the file or module of every entry it names in `imports` (once, after those listed)."""
    sources = missing_sources(named_entries(config), config.imports)
    return config.model_copy(update={"imports": [*config.imports, *sources]}) if sources else config


_NAMED_SECTIONS = {"data": "data", "student": "model", "teacher.model": "model", "method": "method"}


def fields_at(path: tuple, data: Any) -> list[str]:
    """The field names a section at `path` accepts, for did-you-mean on unknown keys."""
    model: Any = RunConfig
    for depth, key in enumerate(path):
        data = data.get(key) if isinstance(data, dict) else None
        dotted = ".".join(map(str, path[: depth + 1]))
        if dotted in _NAMED_SECTIONS:
            registry = REGISTRIES[_NAMED_SECTIONS[dotted]]
            name = data.get("name") if isinstance(data, dict) else None
            model = registry.get(name).Params if name in registry else None
            continue
        field = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = next(
            (
                a
                for a in (field.annotation, *getattr(field.annotation, "__args__", ()))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def format_errors(error: ValidationError, data: Any = None) -> str:
    lines = []
    for e in error.errors():
        # pydantic puts union members and validator names in the path; a user wants field names only
        loc = tuple(
            p
            for p in e["loc"]
            if not str(p).startswith(("function-", "tagged-union"))
            and p not in ("constant", "linear", "cosine", "step", "list")
        )
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            fields = fields_at(loc[:-1], data)
            close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.5)
            message = (
                f"unknown field; did you mean {close[0]!r}?"
                if close
                else f"unknown field; valid fields: {', '.join(fields)}"
                if fields
                else "unknown field"
            )
        lines.append(f"{'.'.join(map(str, loc)) or 'config'}: {message}")
    return "\n".join(dict.fromkeys(lines))


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return validate_config(apply_overrides(data, list(overrides)), folder=path.resolve().parent)


def config_from(value: RunConfig | dict | str | Path, overrides: list[str] = ()) -> RunConfig:
    """Accept a RunConfig, a plain dict or a YAML path, with optional `--set` style overrides."""
    if isinstance(value, RunConfig):
        if overrides or not _checked(value):
            return validate_config(apply_overrides(value.to_dict(), list(overrides)))
        return value
    if isinstance(value, dict):
        return validate_config(apply_overrides(json.loads(json.dumps(value)), list(overrides)))
    return load_config(value, overrides)


def _checked(config: RunConfig) -> bool:
    """Whether every named section was checked against its entry (a RunConfig built in Python is not)."""
    sections = [config.data, config.student, config.method] + ([config.teacher.model] if config.teacher else [])
    return not any(type(section) is NamedSection for section in sections)
