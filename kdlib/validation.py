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

It is the run's door: the CLI's `validate` and `run`, `kdlib.launch` and the app's Start all come through
here, and what a run would fail on is refused before anything is written or trained: a number that is
not finite or is true/false, a file that is not UTF-8 YAML or names a key twice, a `--set` value that is
not YAML, and (`door_problems`) data files and folders that are not there, a teacher checkpoint that is
not there, RCO anchors off the teacher's route (its saved epochs follow from its recipe before it
trains), a method the data cannot serve, a device this machine lacks.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdlib.config import ConfigError, DuplicateKey, RunConfig, apply_overrides, load_yaml
from kdlib.data import DATASETS
from kdlib.methods import METHODS
from kdlib.models import MODELS, build_model
from kdlib.plugins import import_user_code, missing_sources
from kdlib.registry import Registry
from kdlib.spec import FOLDER, RESOLVER, STORED, NamedSection, Spec, resolve_in, shown, user_path
from kdlib.teacher_cache import teacher_cache_refusal
from kdlib.teachers import checkpoint_path, checkpoint_problem, saved_route, weights_problem

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


_RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # a run of some store (`RunStore.create_run`)


def door_problems(config: RunConfig) -> list[str]:
    """What would stop this config once it runs, found before anything is written or trained: the files and
    folders it names, the teacher's checkpoint, what the method needs of the data and of the teacher's route,
    route epochs past the end of training, a device this machine lacks."""
    problems = list(getattr(config.data, "path_problems", lambda where: [])("data"))
    method = METHODS.get(config.method.name)
    needs_target = getattr(method.Params, "needs_target_domain", False)
    data_entry = DATASETS.get(config.data.name)
    kdlib_data = data_entry.__module__.startswith("kdlib.")  # a user's data set may return a target split
    if needs_target and kdlib_data and not getattr(data_entry.Params, "has_target_domain", False):
        problems.append(
            f"data: method {config.method.name!r} adapts to an unlabelled target domain, which data "
            f"{config.data.name!r} has not; use a domain pair, e.g. data: {{name: domain_pair, preset: "
            "toy2d_shift}, or data: {name: domain_pair, source: {...}, target: {...}}"
        )
    if config.output.route is not None:
        problems += _route_beyond("output.route.epochs", config.output.route.epochs, config.epochs, "epochs")
    if config.teacher is not None and method.needs_teacher:
        problems += _teacher_problems(config)
    return problems + _model_problems(config) + _device_problems(config.device)


def _model_problems(config: RunConfig) -> list[str]:
    """Models that cannot take the data's samples, and feature taps the method needs that they lack."""
    shape = getattr(config.data, "sample_shape", lambda: None)()
    if shape is None:
        return []
    teacher = config.teacher.model if config.teacher is not None and METHODS.get(config.method.name).needs_teacher else None
    taps, problems = {}, []
    for role, spec in (("student", config.student), ("teacher.model", teacher)):
        taps[role], problem = (None, None) if spec is None else model_taps(spec, shape)
        if problem:
            problems.append(f"{role}: model {spec.name!r} cannot take the samples of data {config.data.name!r} "
                            f"(shape {list(shape)}): {problem}")
    check = getattr(config.method, "feature_problems", None)
    return problems or (check(taps["student"], taps["teacher.model"]) if check else [])


def model_taps(spec: Spec, shape: tuple[int, ...]) -> tuple[list[str] | None, str | None]:
    """(feature taps, None) of kdlib's model built for samples of `shape` and passed two of them on the meta
    device (no memory, no arithmetic), or (None, why it cannot take them); (None, None) where that is not
    known here: a user's model, or one with pretrained weights to fetch."""
    entry = MODELS.get(spec.name)
    if not entry.__module__.startswith("kdlib.") or getattr(spec, "weights", None):
        return None, None
    return _model_taps(spec.name, json.dumps(spec.model_dump(mode="json"), sort_keys=True), shape)


@functools.lru_cache(maxsize=64)  # the app validates its form at every change
def _model_taps(name: str, params: str, shape: tuple[int, ...]) -> tuple[list[str] | None, str | None]:
    import torch

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # no run's random numbers change
            model = build_model(MODELS.get(name).Params.model_validate(json.loads(params)), shape, 10).eval()
            model(torch.empty((2, *shape)))
    except NotImplementedError:  # an operation without a meta kernel: unknown here, the run will tell
        return None, None
    except Exception as error:  # noqa: BLE001 - whatever the model raises for these samples, the run would raise
        return None, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return list(getattr(model, "feature_taps", {})), None


def _teacher_problems(config: RunConfig) -> list[str]:
    t, home = config.teacher, _store_home()
    if t.checkpoint is None:
        problems = _route_beyond("teacher.route.epochs", t.route.epochs, t.epochs, "teacher.epochs")
    elif _RUN_ID.fullmatch(t.checkpoint) and not (home / t.checkpoint).exists():
        return []  # a run of another store (`--home`): the run looks for it in its own
    else:
        problems = [p] if (p := checkpoint_problem(t.checkpoint, home) or _weights_problem(config, home)) else []
    route = saved_route(config, home)
    check_route = getattr(config.method, "route_problems", None)
    if route is not None and check_route is not None and not problems:
        problems += check_route(*route, config.epochs)
    return problems


def _weights_problem(config: RunConfig, home: Path) -> str | None:
    """Teacher weights that torch cannot load, or that do not fit teacher.model for this data (where the data's
    sample shape and classes are known here, and the model is kdlib's own without pretrained weights to fetch)."""
    model, path = config.teacher.model, checkpoint_path(config.teacher.checkpoint, home)
    shape = getattr(config.data, "sample_shape", lambda: None)()
    classes = getattr(config.data, "class_count", lambda: None)()
    if shape is None or classes is None or model_taps(model, shape)[0] is None:
        return None  # unknown here, or a model that cannot take the data: said apart
    weights = path / "model.pt" if path.is_dir() else path
    stat = weights.stat()
    return _weights_problem_of(model.name, json.dumps(model.model_dump(mode="json"), sort_keys=True), str(weights),
                               stat.st_size, stat.st_mtime_ns, shape, classes)


@functools.lru_cache(maxsize=16)  # keyed by the file's size and time too: a file written anew is read anew
def _weights_problem_of(name: str, params: str, weights: str, size: int, mtime: int, shape: tuple, classes: int):
    return weights_problem(MODELS.get(name).Params.model_validate(json.loads(params)), Path(weights), shape, classes)


def _route_beyond(field: str, epochs: list[int] | None, total: int, total_field: str) -> list[str]:
    beyond = [e for e in epochs or [] if not 0 <= e <= total]
    if not beyond:
        return []
    return [f"{field}: {', '.join(map(str, beyond))} {'is' if len(beyond) == 1 else 'are'} outside the {total} epochs "
            f"of training ({total_field}), so never saved; keep epochs 0..{total} or raise {total_field}"]


def _device_problems(device: str) -> list[str]:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return ["device: cuda, but torch finds no CUDA device on this machine; use device: auto or cpu"]
    if device == "mps" and not torch.backends.mps.is_available():
        return ["device: mps, but torch finds no Apple GPU (MPS) on this machine; use device: auto or cpu"]
    return []


def _store_home() -> Path:
    """The store a run started from here would use, without creating it (`kdlib.paths.kdlib_home` makes it)."""
    return user_path(os.environ.get("KDLIB_HOME") or "runs").resolve()


def non_finite(value: Any, path: tuple = ()) -> list[str]:
    """A line for every number in plain config data that is inf or nan (YAML's .inf, .nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{'.'.join(map(str, path)) or 'config'}: expected a finite number, got {value}"]
    if isinstance(value, dict):
        return [line for key, v in value.items() for line in non_finite(v, (*path, key))]
    if isinstance(value, list | tuple):
        return [line for i, v in enumerate(value) for line in non_finite(v, (*path, i))]
    return []


def validate_config(data: dict, folder: str | Path | None = None, door: bool = True) -> RunConfig:
    """A RunConfig from plain data; ConfigError with one line per problem otherwise. Relative paths in it
    (`imports`, data files) start from `folder`: the config file's, else the current folder.

    `door`: also refuse what would stop the run once started (`door_problems`: missing files, anchors off the
    teacher's route, a method the data cannot serve, ...). A reader of a stored run's config leaves it off,
    so that a run whose data has moved away since can still be shown.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__}")
    folder = Path(folder or Path.cwd()).resolve()
    import_user_code(data.get("imports"), folder)  # a value that is not a list of text: the field's check says so
    problems = non_finite(data)
    try:
        config = RunConfig.model_validate(data, context={RESOLVER: resolve_section, FOLDER: folder, STORED: not door})
    except ValidationError as error:
        problems += format_errors(error, data, skip_non_finite=bool(problems)).splitlines()
        raise ConfigError("\n".join(dict.fromkeys(problems))) from None
    problems += method_problems(config) + (door_problems(config) if door else [])
    if problems:
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


# pydantic's type errors, said as the type a field expects ("expected a number, got 'hot'")
_EXPECTED = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a section (a mapping of its fields)",
    "model_attributes_type": "a section (a mapping of its fields)",
    "finite_number": "a finite number",
}


def format_errors(error: ValidationError, data: Any = None, skip_non_finite: bool = False) -> str:
    """One `path: message` line per error; `skip_non_finite` leaves out the inf and nan that `non_finite` said."""
    lines = []
    for e in error.errors():
        if skip_non_finite and e["type"] == "finite_number" and isinstance(e["input"], float):
            continue
        # pydantic puts union members and validator names in the path; a user wants field names only
        loc = tuple(
            p
            for p in e["loc"]
            if not str(p).startswith(("function-", "tagged-union"))
            and p not in ("constant", "linear", "cosine", "step", "list")
        )
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] in _EXPECTED:
            message = f"expected {_EXPECTED[e['type']]}, got {shown(e['input'])}"
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


def read_config_file(path: str | Path) -> Any:
    """The plain data of a YAML config file; ConfigError for a missing file, a folder, a file that is not
    UTF-8 text, YAML that does not parse, or a key given twice."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file; give a run's YAML file, e.g. configs/quickstart.yaml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
                          "a config is a YAML text file saved as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        data = load_yaml(text)
    except DuplicateKey as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return {} if data is None else data


def load_config(path: str | Path, overrides: list[str] = (), door: bool = True) -> RunConfig:
    data = read_config_file(path)
    return validate_config(apply_overrides(data, list(overrides)), folder=Path(path).resolve().parent, door=door)


def config_from(value: RunConfig | dict | str | Path, overrides: list[str] = (), door: bool = True) -> RunConfig:
    """Accept a RunConfig, a plain dict or a YAML path, with optional `--set` style overrides (`door`: see
    `validate_config`)."""
    if isinstance(value, RunConfig):
        if overrides or not _checked(value):
            return validate_config(apply_overrides(value.to_dict(), list(overrides)), door=door)
        return value
    if isinstance(value, dict):
        try:
            data = json.loads(json.dumps(value))  # a copy, and plain data: YAML's types only
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config: not plain data ({error}); use numbers, text, lists and mappings") from None
        return validate_config(apply_overrides(data, list(overrides)), door=door)
    return load_config(value, overrides, door)


def _checked(config: RunConfig) -> bool:
    """Whether every named section was checked against its entry (a RunConfig built in Python is not)."""
    sections = [config.data, config.student, config.method] + ([config.teacher.model] if config.teacher else [])
    return not any(type(section) is NamedSection for section in sections)
