"""The method contract: what the engine asks of a KD method, and nothing more.

A method is one file in `kdlib/methods/`; the file's stem is its key. The file holds:
- `Params`, a `Spec` whose field descriptions are the help the app and the widgets show;
- pure tensor functions for its maths, which views, lessons, notebooks and tests import;
- one `Distiller` subclass whose one required hook is the loss of a batch:

      def loss(self, batch, student_logits, teacher_logits) -> StepOutput(loss, terms, per_sample)

The engine does the rest the same way for every method: it hands over the teacher's logits of the
batch (from the teacher-output cache where that applies: for every method that does not override
`forward`), reads the gradient at the student's logits for the rescaling probe, evaluates,
calibrates, records and checkpoints. Optional hooks are for a real phase of a method's own:
`forward` (a step that is more than student logits against teacher logits: features, a teacher it
trains), `on_epoch_start` (RCO's anchor switch, PS-KD's buffer), `prepare` (DFA's search),
`epoch_arrays`, `extra_parameters`, `state_dict`/`load_state_dict`, `merge_across_processes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlib.data.base import Batch, Split
from kdlib.registry import Registry
from kdlib.schedules import Tuned, is_schedulable, value_at_step
from kdlib.spec import Spec

TeacherLogits = Callable[[Batch], Tensor]  # a frozen teacher's float32 logits of a batch, without gradient


@dataclass
class StepOutput:
    """A step's loss (a batch mean), its named terms (for the curves) and per-sample values (detached,
    one per sample of the batch). `logits`: the student logits whose gradient the rescaling probe
    reads; the default `forward` fills it in, a method that overrides `forward` names them."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    per_sample: dict[str, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None


@dataclass(frozen=True)
class Value:
    """A per-sample value a method records: its label on axes and legends, and what it means in one line."""

    label: str
    meaning: str


# The vocabulary that methods share, so that views find a value by its name whatever the method.
COMMON_VALUES = {
    "loss_per_sample": Value("loss", "the sample's loss under the method"),
    "p_true_student": Value("p(true) student", "the student's probability of the true class"),
    "p_true_teacher": Value("p(true) teacher", "the teacher's probability of the true class"),
    "kl": Value("KL(teacher || student)", "KL divergence of the student's softened distribution from the teacher's"),
}


def common_values(*names: str) -> dict[str, Value]:
    return {name: COMMON_VALUES[name] for name in names}


_HOLE = re.compile(r"\{(\w+)\}")  # a placeholder in a declared name: "p_true_head{n}"
_FILL = re.compile(r"\{(\w+)([+-]\d+)?\}")  # one in a label or meaning, maybe with an offset: "{n+1}"


def describe_value(values: dict[str, Value], key: str) -> Value | None:
    """The declared `Value` of a stored per-sample key: an exact name first, then a name with a
    placeholder (`p_true_head{n}` holds `p_true_head2`), whose label and meaning get the matched
    text (`{n}` -> 2, `{n+1}` -> 3). None when nothing declares the key."""
    if key in values:
        return values[key]
    for name, value in values.items():
        match = _pattern(name).fullmatch(key) if _HOLE.search(name) else None
        if match:
            return Value(_fill(value.label, match), _fill(value.meaning, match))
    return None


def _pattern(name: str) -> re.Pattern:
    r"""`p_true_head{n}` -> `p_true_head(?P<n>\w+)`; a placeholder used twice must match the same text."""
    seen: set[str] = set()

    def hole(m: re.Match) -> str:
        again = m[1] in seen
        seen.add(m[1])
        return f"(?P={m[1]})" if again else rf"(?P<{m[1]}>\w+)"

    return re.compile(re.sub(r"\\\{(\w+)\\\}", hole, re.escape(name)))


def _fill(text: str, match: re.Match) -> str:
    def one(m: re.Match) -> str:
        found = match.groupdict().get(m[1])
        if found is None or (m[2] and not found.isdigit()):
            return m[0]
        return str(int(found) + int(m[2])) if m[2] else found

    return _FILL.sub(one, text)


@dataclass
class TeacherRoute:
    """The teacher's training route: the saved epochs, and the teacher as it was after each."""

    epochs: list[int]
    load: Callable[[int], nn.Module]  # eval mode, frozen, on the run's device
    logits: Callable[[int], TeacherLogits] | None = None  # a checkpoint as a teacher of batches (the cache's rows)

    def teacher(self, epoch: int) -> TeacherLogits:
        """The checkpoint after `epoch` epochs as a teacher that gives the logits of a batch."""
        if self.logits is not None:
            return self.logits(epoch)
        return model_teacher(self.load(epoch))


def model_teacher(model: nn.Module) -> TeacherLogits:
    @torch.no_grad()
    def logits(batch: Batch) -> Tensor:
        return model(batch.x).float()

    return logits


@dataclass
class MethodContext:
    """What a method may need to know of the run beyond its own params."""

    num_classes: int
    train_size: int
    total_epochs: int
    device: torch.device
    train: Split | None = None  # the training split, for methods that precompute per-sample targets
    route: TeacherRoute | None = None
    target_train: Split | None = None  # domain adaptation: the target's training samples, labels masked (-1)
    teacher_logits: TeacherLogits | None = None  # the teacher's logits of a batch (the model's, or the cache's)


def true_class_prob(logits: Tensor, labels: Tensor) -> Tensor:
    return F.softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)


class Distiller:
    """A KD method: `loss` of a batch; the default `forward` gives it the student's and teacher's logits."""

    Params: ClassVar[type[Spec]]
    needs_teacher: ClassVar[bool] = False
    per_sample_values: ClassVar[dict[str, Value]] = {}  # what `StepOutput.per_sample` holds, for the views
    # False for methods that take optimizer steps of their own (a search, a teacher they train): those
    # steps are not shared across processes, so such a method refuses to run under torchrun.
    runs_on_several_processes: ClassVar[bool] = True
    epoch_step: int = 0  # the step within the epoch, set by the trainer: where a tuned param's changes take effect

    def __init__(self, params: Spec, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        self.params, self.student, self.teacher, self.context = params, student, teacher, context
        self.epoch = 0
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method {params.name!r} needs a teacher: add a `teacher:` section to the config")

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        raise NotImplementedError

    def forward(self, batch: Batch) -> StepOutput:
        teacher = self.context.teacher_logits
        teacher_logits = teacher(batch) if teacher is not None else None
        student_logits = self.student(batch.x)
        out = self.loss(batch, student_logits, teacher_logits)
        out.logits = student_logits
        return out

    def coefficient(self, name: str) -> float:
        """The value of a schedulable param at the current epoch (and step, for one tuned while it trains)."""
        raw = getattr(self.params, name)
        # worked out once per epoch (steps ask often); a notebook may change a param or the run's length mid-epoch,
        # and a param tuned while the run trains (kdlib.tuning) changes at a step: the trainer sets `epoch_step`
        when = (self.epoch, self.epoch_step if isinstance(raw, Tuned) else 0, self.context.total_epochs)
        cache = self.__dict__.setdefault("_coefficients", {})
        found = cache.get(name)
        if found is None or found[0] != when or found[1] is not raw:
            found = cache[name] = (when, raw, value_at_step(raw, *when))
        return found[2]

    def coefficients(self) -> dict[str, float]:
        """Every schedulable param at the current epoch, logged with the epoch's scalars."""
        return {
            name: self.coefficient(name)
            for name, info in type(self.params).model_fields.items()
            if is_schedulable(info)
        }

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        if self.teacher is not None:
            self.teacher.eval()  # BN statistics and dropout of a frozen teacher must not move

    def prepare(self, log: Callable[[int, dict[str, float]], None]) -> None:
        """Work before the first epoch (DFA's search); `log(step, scalars)` records it in the store
        with epoch -1. Called after a resumed run's state is restored, so a method can skip what
        its `state_dict` shows was done."""

    def epoch_arrays(self) -> dict[str, np.ndarray]:
        """Arrays a method adds to the epoch's record ("split.key" -> array), e.g. a moving teacher's
        predictions on the probe set."""
        return {}

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters a method adds beside the student's (adapters, heads)."""
        return []

    def merge_across_processes(self, processes) -> None:
        """At the end of an epoch under torchrun: merge per-sample state that each process wrote for its
        own samples (`processes.merge_rows`), so every process holds all of it next epoch."""

    def state_dict(self) -> dict:
        """Method state that a resumed run needs (e.g. PS-KD's prediction buffer)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


METHODS: Registry[type[Distiller]] = Registry("method", package="kdlib.methods", one_per_file=Distiller)
