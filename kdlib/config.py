"""RunConfig: everything a run is, validated once at the door.

    imports:   [mine.py]                                 your own data sets, models, methods (kdlib.plugins)
    data:      {name: mnist1d, n_samples: 6000}          a dataset and its params (kdlib.data)
    teacher:   {model: {name: cnn1d}, epochs: 20}        how the teacher is trained or loaded
    student:   {name: mlp, hidden: [128]}                a model and its params (kdlib.models)
    method:    {name: kd, temperature: 4, w_kd: 0.9}     a method and its params; each coefficient
                                                         may follow a schedule (kdlib.schedules)
    optimizer, lr_schedule, epochs, batch_size, seed, device, probes, output
    sweep:     {search: {temperature: "log:1:16"}}       a hyperparameter search over this config
                                                         (kdlib.sweep); not part of any run

This module knows no registry: the data, model and method sections are a name and params here,
which `kdlib.validation` (`load_config(path, overrides)`, `validate_config(data)`) checks against
the params class of the registry entry they name, so a typo in a name or a key is refused with the
path of the field and the closest valid names. `config.to_yaml()` writes a config back.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from kdlib.loggers import LoggerSection
from kdlib.schedules import Changes
from kdlib.spec import MAX_SEED, Named, Section, context_folder, is_file_import, local_path


class ConfigError(ValueError):
    """Bad config input; the message has one line per problem: `path.to.field: what is wrong`."""


DataSpec = Named("data")
ModelSpec = Named("model")
MethodSpec = Named("method")


class OptimizerSection(Section):
    """kdlib's three short names with their defaults, or any torch.optim class by name with its arguments."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, validate_default=True)

    name: str = Field(
        "adam",
        description="sgd, adam or adamw (the fields below are their arguments), or any torch.optim class by name "
        "(SGD, RMSprop, Adagrad, NAdam, ...), whose keyword arguments may be written beside it",
    )
    lr: float = Field(1e-3, gt=0, description="base learning rate")
    momentum: float | None = Field(None, ge=0, lt=1, description="SGD momentum (null: 0.9 for sgd, torch's default for a class)")
    nesterov: bool | None = Field(None, description="Nesterov momentum, SGD (null: off, or torch's default)")
    weight_decay: float | None = Field(
        None, ge=0, description="L2 weight decay, decoupled for adamw (null: 0 for the short names, torch's default for a class)"
    )

    @model_validator(mode="after")
    def _torch_arguments(self) -> OptimizerSection:
        check_arguments("torch.optim", self.name, self.torch_arguments(), SHORT_OPTIMIZERS, self.model_extra)
        return self

    def torch_arguments(self) -> dict[str, Any]:
        """A torch class's keyword arguments: lr, the fields given a value, and the extra keys."""
        given = {k: v for k in ("momentum", "nesterov", "weight_decay") if (v := getattr(self, k)) is not None}
        return {"lr": self.lr, **given, **(self.model_extra or {})}


class LRScheduleSection(Section):
    """kdlib's per-step schedules by short name, or any torch.optim.lr_scheduler class by name with its arguments."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, validate_default=True)

    name: str = Field(
        "cosine",
        description="constant, cosine or step (kdlib's: the learning rate set every step, after warm-up), or any "
        "torch.optim.lr_scheduler class by name (MultiStepLR, CosineAnnealingLR, OneCycleLR, ReduceLROnPlateau, "
        "...), whose keyword arguments may be written beside it",
    )
    warmup_epochs: float = Field(0.0, ge=0, description="epochs of linear warm-up from 0 to the base rate (short names)")
    milestones: list[int] | None = Field(None, description="step (or MultiStepLR): epochs at which lr is multiplied by gamma")
    gamma: float | None = Field(None, gt=0, description="step: factor at each milestone (null: 0.1, or torch's default)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine: final lr as a share of the base lr")
    interval: Literal["epoch", "step"] = Field(
        "epoch", description="a torch scheduler: step it after every epoch (MultiStepLR, ...) or every step (OneCycleLR)"
    )
    monitor: str = Field("val.nll", description="ReduceLROnPlateau: the epoch scalar it watches")

    @model_validator(mode="after")
    def _torch_arguments(self) -> LRScheduleSection:
        if self.name not in SHORT_LR_SCHEDULES and self.warmup_epochs:
            raise ValueError(f"warmup_epochs: kdlib's warm-up goes with {', '.join(SHORT_LR_SCHEDULES)}; with "
                             f"{self.name}, leave it at 0 (or use torch's LinearLR)")
        check_arguments("torch.optim.lr_scheduler", self.name, self.torch_arguments(), SHORT_LR_SCHEDULES,
                        self.model_extra)
        return self

    def torch_arguments(self) -> dict[str, Any]:
        """A torch scheduler's keyword arguments: the fields given a value, and the extra keys."""
        given = {k: v for k in ("milestones", "gamma") if (v := getattr(self, k)) is not None}
        return {**given, **(self.model_extra or {})}


SHORT_OPTIMIZERS = ("sgd", "adam", "adamw")
SHORT_LR_SCHEDULES = ("constant", "cosine", "step")
_GIVEN_BY_KDLIB = {"params", "optimizer", "self"}  # a torch class's arguments that kdlib passes itself


def check_arguments(module_name: str, name: str, arguments: dict[str, Any], short: tuple[str, ...],
                    extra: dict[str, Any] | None) -> None:
    """A short name takes its fields only; any other name must be a class of `module_name` whose constructor
    takes every argument. Refused keys are reported at their own path, with the closest valid names."""
    import importlib
    import inspect

    if name in short:
        if extra:
            key = next(iter(extra))
            raise ValidationError.from_exception_data("arguments", [InitErrorDetails(
                type="extra_forbidden", loc=(key,), input=extra[key])])
        return
    module = importlib.import_module(module_name)  # torch, only for a config that names a torch class
    kind = getattr(module, name, None)
    if not isinstance(kind, type) or name.startswith("_"):
        classes = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_"))
        close = difflib.get_close_matches(name, [*short, *classes], n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"one of {', '.join(short)} or a class of {module_name}"
        _refuse("name", name, f"{name!r} is not {' or '.join(short)} nor a class of {module_name}; {hint}")
    parameters = {k: p for k, p in inspect.signature(kind.__init__).parameters.items() if k not in _GIVEN_BY_KDLIB}
    accepted = {k for k, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for key, value in arguments.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(sorted(accepted))}"
            _refuse(key, value, f"not an argument of {module_name}.{name}; {hint}")
    required = [k for k in sorted(accepted) if parameters[k].default is inspect.Parameter.empty and k not in arguments]
    if required:
        _refuse("name", name, f"{module_name}.{name} needs {', '.join(required)}; write "
                f"{' and '.join(f'{k}: ...' for k in required)} beside name, or pick another class")


def _refuse(key: str, value: Any, message: str) -> None:
    error = InitErrorDetails(type=PydanticCustomError("argument", message), loc=(key,), input=value)
    raise ValidationError.from_exception_data("arguments", [error])


class RouteSection(Section):
    every: int | None = Field(
        1, ge=1, description="save the weights every k epochs (the route of RCO and the route view)"
    )
    epochs: list[int] | None = Field(
        None, description="or: save exactly after these epochs (1-based; 0 is the initialization)"
    )

    def saved_epochs(self, total_epochs: int) -> list[int]:
        """Checkpoint c holds the weights after c epochs; the last epoch is always saved."""
        chosen = (
            set(self.epochs)
            if self.epochs is not None
            else set(range(self.every or total_epochs, total_epochs + 1, self.every or total_epochs))
        )
        return sorted(e for e in chosen | {total_epochs} if 0 <= e <= total_epochs)


class TrainingSection(Section):
    """What a model is trained with; the teacher section reuses it with its own values."""

    epochs: int = Field(20, ge=1, description="passes over the training split")
    batch_size: int = Field(128, ge=1, description="samples per step")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection, description="see `optimizer` below")
    lr_schedule: LRScheduleSection = Field(default_factory=LRScheduleSection, description="see `lr_schedule` below")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")


class TeacherCacheSection(Section):
    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="read the frozen teacher's logits on the training split from a cache (computed once per teacher, "
        "data and weights, stored with the teacher artifact) instead of a teacher forward pass every step. auto: on "
        "where it changes nothing but time (a method that only reads the teacher's logits of the batch, "
        "deterministic inputs or augment_draws, a file of at most 1 GiB); true: on, or an error that says why not",
    )
    dtype: Literal["float32", "float16"] = Field(
        "float32", description="float16 halves the file and memory; logits keep about three significant digits"
    )
    augment_draws: int = Field(
        0,
        ge=0,
        le=256,
        description="with random augmentation: cache this many seeded augmented views per sample; the student "
        "then trains on those views only (each epoch draws one per sample). 0: no cache under augmentation",
    )


class TeacherSection(TrainingSection):
    model: ModelSpec = Field(description="the teacher's architecture (a model name and its params)")
    checkpoint: str | None = Field(None, description="load the teacher's weights from this file instead of training it")
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="seed of the teacher's training; fixed apart from the run's seed so that "
        "students of several seeds share one teacher",
    )
    route: RouteSection = Field(
        default_factory=RouteSection, description="which epochs of the teacher's training are kept"
    )
    cache: TeacherCacheSection = Field(
        default_factory=TeacherCacheSection, description="the teacher-output cache (see `teacher.cache` below)"
    )


class ProbesSection(Section):
    ece_bins: int = Field(15, ge=2, description="equal-width confidence bins of the expected calibration error")
    eval_splits: list[Literal["train", "val", "test"]] = Field(
        ["val", "test"], description="splits evaluated after each epoch"
    )
    per_sample: bool = Field(True, description="record per-sample values of the training split every epoch")
    grad_stats: bool = Field(
        True,
        description="record per sample the gradient at the student's logits and its ratio "
        "to plain cross-entropy's (read from each step's own backward pass, for every method; no extra "
        "pass); needs per_sample",
    )
    probs_every: int = Field(
        1,
        ge=0,
        description="store every evaluated split's full class probabilities every k "
        "epochs (and at the last epoch); 0 = never. Bias-variance per sample reads them",
    )
    route_probe_size: int = Field(
        500,
        ge=0,
        description="training samples (the first ones) on which the student is placed on the "
        "teacher's route each epoch (when the teacher has a route); 0 = off",
    )
    log_every: int = Field(10, ge=1, description="steps between two logged step scalars (and checks of pause/stop)")


class OutputSection(Section):
    name: str | None = Field(None, description="a name for the run (default: method, student and data)")
    route: RouteSection | None = Field(
        None, description="save this run's weights at these epochs, so it can serve as a teacher with a route"
    )


class SweepSection(Section):
    """A hyperparameter search over the config it sits in (`python -m kdlib sweep`); no part of a run."""

    search: dict[str, str] = Field(
        default_factory=dict,
        description="config path -> range: `LOW:HIGH` (uniform; integers when both are written without a dot), "
        "`log:LOW:HIGH` (log-uniform), `int:LOW:HIGH`, `choice:a,b,c`; a bare name is a method param "
        "(`temperature` is `method.temperature`). Quote ranges in YAML: it reads an unquoted 1:16 as a number",
    )
    trials: int = Field(10, ge=1, description="trials this process runs (other processes may add to the same study)")
    metric: str = Field(
        "val.acc", description="the epoch scalar to optimize; a trial's value is the metric at its last epoch"
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="None: maximize an accuracy, minimize nll, ece and losses"
    )
    pruner: Literal["median", "none"] = Field(
        "median",
        description="median: stop a trial whose metric after an epoch is worse than the median of earlier "
        "trials after that epoch (the run ends stopped, the trial pruned)",
    )
    study: str | None = Field(
        None,
        description="the Optuna study's name; sweeps that name the same study and storage add to it "
        "(None: the config file's name and the time)",
    )
    storage: str | None = Field(
        None,
        description="an Optuna RDB URL, e.g. postgresql://user:pass@host/db, that several machines share "
        "(None: sqlite:///$KDLIB_HOME/studies.sqlite)",
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="seed of the sampler (Optuna's TPE); None: random")

    @field_validator("search", mode="before")
    @classmethod
    def _ranges_are_text(cls, search: Any) -> Any:
        for path, spec in (search or {}).items() if isinstance(search, dict) else ():
            if not isinstance(spec, str):
                raise ValueError(
                    f"{path}: {spec!r} is not a range; write it as text, e.g. {path}: '0.1:0.9' (YAML reads an "
                    "unquoted 1:16 as the number 76)"
                )
        return search


class RunConfig(TrainingSection):
    """One run: a student trained by a method on a dataset, maybe taught by a teacher."""

    imports: list[str] = Field(
        default_factory=list,
        description="Python files (relative to the config file's folder) or module names, imported before the "
        "rest of the config is read by every process that reads it, so the data sets, models and methods they "
        "register (kdlib.register_dataset, register_model, register_method) can be named here. Files are kept "
        "as absolute paths",
    )
    data: DataSpec = Field(description="the dataset and its params")
    student: ModelSpec = Field(description="the model being trained")
    method: MethodSpec = Field(
        default_factory=lambda: {"name": "ce"}, validate_default=True, description="the KD method and its params"
    )
    teacher: TeacherSection | None = Field(None, description="the teacher, for methods that need one")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of initialization and batch order")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto picks CUDA, then MPS, then CPU")
    threads: int | None = Field(
        None, ge=1, description="torch threads of the run's process (null: $KDLIB_THREADS if set, else the cores "
        "shared among the runs going at once)"
    )
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported); ignored on CPU")
    channels_last: bool = Field(
        True, description="on CUDA, convolutional students and their inputs in channels_last memory format"
    )
    compile: bool = Field(
        False, description="torch.compile the student's forward (the first epoch pays the compile time)"
    )
    probes: ProbesSection = Field(default_factory=ProbesSection, description="see `probes` below")
    output: OutputSection = Field(
        default_factory=OutputSection,
        description="`name`: the run's name; `route`: keep this run's weights at chosen epochs (see `route` below)",
    )
    loggers: list[LoggerSection] = Field(
        default_factory=list,
        description="tools that hear the run's step and epoch scalars as it goes (kdlib.loggers): `[tensorboard]` "
        "writes event files into `<run folder>/tensorboard`, `[{name: tensorboard, dir: tb}]` into `tb/<run id>` "
        "(relative to the config file); `[{name: mlflow, tracking_uri: ..., experiment: ...}]` logs to MLflow",
    )
    lr_changes: Changes = Field(
        default_factory=list,
        description="changes of optimizer.lr made while the run trained (`kdlib set RUN optimizer.lr=...`): from "
        "each one's epoch and step (within that epoch, 0-based) on, the base learning rate is its value, which "
        "kdlib's lr schedules go on scaling (constant, cosine, step only)",
    )
    # exclude: a trial's config (and so the store, the teacher's hash, siblings) never carries the search
    sweep: SweepSection | None = Field(
        None, exclude=True, description="a hyperparameter search over this config (see `sweep` below)"
    )

    @field_validator("imports")
    @classmethod
    def _files_absolute(cls, imports: list[str], info: ValidationInfo) -> list[str]:
        # absolute, so a worker started in another folder finds them
        return [local_path(i, context_folder(info)) if is_file_import(i) else i for i in imports]

    @model_validator(mode="after")
    def _lr_changes_under_kdlib_schedules(self) -> RunConfig:
        if self.lr_changes and self.lr_schedule.name not in SHORT_LR_SCHEDULES:
            raise ValueError(f"lr_changes: the base lr changes under kdlib's lr schedules ({', '.join(SHORT_LR_SCHEDULES)})"
                             f"; lr_schedule {self.lr_schedule.name!r} keeps learning rates of its own")
        return self

    def to_dict(self) -> dict:
        """Plain data; `imports` first (the order a reader needs them), `imports` and `lr_changes` left out when empty."""
        data = _simplify(self.model_dump(mode="json"))
        if not data["lr_changes"]:
            del data["lr_changes"]
        imports = data.pop("imports")
        return {"imports": imports, **data} if imports else data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def run_name(self) -> str:
        return self.output.name or f"{self.method.name} {self.student.name} on {self.data.name}"


def _simplify(value: Any) -> Any:
    """Constant schedules back to plain numbers, so a dumped config reads like the one written."""
    if isinstance(value, dict):
        if value.get("kind") == "constant" and set(value) == {"kind", "value"}:
            return value["value"]
        return {k: _simplify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_simplify(v) for v in value]
    return value


def stable_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class DuplicateKey(yaml.YAMLError):
    """A mapping that names a key twice (PyYAML would keep the last silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: keys written beside it override the merged ones on purpose
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in first:
                    raise DuplicateKey(f"line {line}: key {key!r} is given twice (first on line {first[key]}); keep one")
                first[key] = line
            except TypeError:
                continue  # an unhashable key: PyYAML's own error names it
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """YAML read safely, refusing a key given twice in one mapping (yaml.YAMLError naming the key and line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` with the value read as YAML (so numbers, lists and mappings work)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: write path.to.field=value, e.g. --set method.temperature=2")
    path, raw = text.split("=", 1)
    keys = path.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {text!r}: {path.strip()!r} is not a path; write path.to.field=value")
    try:
        return keys, load_yaml(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise ConfigError(f"--set {text!r}: {raw!r} is not a YAML value ({problem}); close its brackets and "
                          "quotes, e.g. [1, 2] for a list") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    if overrides and not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__}")
    for text in overrides:
        path, value = parse_override(text)
        set_path(data, path, value, f"--set {text!r}")
    return data


def set_path(data: dict, path: list[str], value: Any, label: str) -> dict:
    """Put `value` at `path` in plain config data, making sections on the way; `label` names the input in errors."""
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {} if node.get(key) is None else _fail_override(label, key)
        node = node[key]
    node[path[-1]] = value
    return data


def _fail_override(label: str, key: str):
    raise ConfigError(f"{label}: {key!r} is a value, not a section")


def yaml_text(value: Any) -> str:
    """A value as one line of YAML, for a text field in a form ("" for None)."""
    return "" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def parse_yaml_text(text: str) -> Any:
    """A value typed into a form, read as YAML; `10, 20` reads as a list. Unreadable text is returned
    as it is, so that validation names the field."""
    text = text.strip()
    if "," in text and not text.startswith(("[", "{")):
        text = f"[{text}]"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
