"""The Distiller interface: what the trainer asks of every method, and nothing method-specific.

A distiller turns a batch into a `StepOutput`: the loss to minimise, its named terms (for the
curves) and per-sample tensors (for the per-sample views). Names of per-sample values come from
one vocabulary so the views need no per-method code: `p_true_student`, `p_true_teacher`,
`loss_per_sample`, `kl`, `weight`, `grad_scale`, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from kdlib.data.base import Batch, Split
from kdlib.ops import softmax
from kdlib.registry import Registry
from kdlib.schedules import as_schedule
from kdlib.spec import Spec

if TYPE_CHECKING:
    from kdlib.teacher_cache import TeacherOutputs

METHODS: Registry = Registry("method")


@dataclass
class StepOutput:
    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    per_sample: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TeacherRoute:
    """The teacher's training route: the saved epochs, and the teacher as it was after each."""

    epochs: list[int]
    load: Callable[[int], nn.Module]  # eval mode, frozen, on the run's device
    outputs: Callable[[int], TeacherOutputs] | None = None  # a checkpoint's cached logits on the training split


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
    teacher_outputs: TeacherOutputs | None = None  # the teacher's cached logits on the training split (teacher.cache)


def true_class_prob(logits: Tensor, labels: Tensor) -> Tensor:
    return softmax(logits.float()).gather(1, labels[:, None]).squeeze(1)


class Distiller:
    """A method: `forward(batch) -> StepOutput`, by default teacher forward, student forward, `loss`."""

    Params: ClassVar[type[Spec]]
    needs_teacher: ClassVar[bool] = False
    # True when the teacher only gives its logits of the training batch (eval mode, frozen): they may then
    # come from the teacher-output cache. Not for methods that read features, train the teacher, or feed
    # it other inputs.
    uses_teacher_logits_only: ClassVar[bool] = False
    watch_gradients: bool = True  # the trainer turns it off when `probes.grad_stats` or `probes.per_sample` is false
    # False for methods that take optimizer steps of their own (a search, a teacher they train): those
    # steps are not shared across processes, so such a method refuses to run under torchrun.
    runs_on_several_processes: ClassVar[bool] = True

    def __init__(self, params: Spec, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        self.params, self.student, self.teacher, self.context = params, student, teacher, context
        self.epoch = 0
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method {params.name!r} needs a teacher: add a `teacher:` section to the config")

    def prepare(self, log: Callable[[int, dict[str, float]], None]) -> None:
        """Work before the first epoch (DFA's search); `log(step, scalars)` records it in the store
        with epoch -1. Called after a resumed run's state is restored, so a method can skip what
        its `state_dict` shows was done."""

    def epoch_arrays(self) -> dict[str, np.ndarray]:
        """Arrays a method adds to the epoch's record ("split.key" -> array), e.g. a moving teacher's
        predictions on the probe set."""
        return {}

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        if self.teacher is not None:
            self.teacher.eval()  # BN statistics and dropout of a frozen teacher must not move

    def coefficient(self, name: str) -> float:
        """The value of a schedulable param at the current epoch (worked out once per epoch: steps ask often)."""
        raw = getattr(self.params, name)
        # what the value depends on, all checked: a notebook may change a param or the run's length mid-epoch
        when = (self.epoch, self.context.total_epochs)
        cache = self.__dict__.setdefault("_coefficients", {})
        found = cache.get(name)
        if found is None or found[0] != when or found[1] is not raw:
            found = cache[name] = (when, raw, as_schedule(raw).value_at(*when))
        return found[2]

    def coefficients(self) -> dict[str, float]:
        """Every schedulable param at the current epoch, logged with the epoch's scalars."""
        return {
            name: self.coefficient(name)
            for name, info in type(self.params).model_fields.items()
            if (info.json_schema_extra or {}).get("schedulable")
        }

    @torch.no_grad()
    def teacher_forward(self, batch: Batch) -> Tensor | None:
        if self.context.teacher_outputs is not None:  # only for methods with `uses_teacher_logits_only`
            return self.context.teacher_outputs.lookup(batch)
        return None if self.teacher is None else self.teacher(batch.x)

    def forward(self, batch: Batch) -> StepOutput:
        teacher_out = self.teacher_forward(batch)
        student_out = self.student(batch.x)
        self.watch_logits(student_out)
        return self.loss(batch, student_out, teacher_out)

    def finish_per_sample(self, rows: dict[str, Tensor], labels: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """At the end of an epoch: the per-sample values, and terms averaged over the epoch's samples, from the
        rows its steps wrote in `StepOutput.per_sample` ([N, ...] each, NaN where no step wrote; `labels` [N]).

        A method may write what it needs per step (e.g. logits, by reference) and work the values out here
        once, for all rows in a few tensor operations, rather than in every step. The default keeps the rows.
        """
        return rows, {}

    def watch_logits(self, logits: Tensor) -> None:
        """Keep the student's logits so that the gradient at them is there after the backward pass.

        The gradient probe (`probes.logit_gradient_stats`) reads it from there: no second backward.
        """
        if not self.watch_gradients:  # retain_grad adds work to every backward pass: only when asked for
            return
        if logits.requires_grad:
            logits.retain_grad()
        self._watched_logits = logits

    def watched_logit_gradient(self, batch: Batch, loss_scale: float | Tensor = 1.0) -> tuple[Tensor, Tensor] | None:
        """The watched logits and d loss_i / d logits_i per sample, after the backward pass.

        The loss is a batch mean, so the gradient at the logits is multiplied back by the batch size
        (and divided by a grad scaler's factor under fp16).
        """
        logits = getattr(self, "_watched_logits", None)
        self._watched_logits = None
        if logits is None or logits.grad is None:
            return None
        return logits.detach().float(), logits.grad.float() * (len(batch) / loss_scale)

    def loss(self, batch: Batch, student_out: Tensor, teacher_out: Tensor | None) -> StepOutput:
        raise NotImplementedError

    def merge_across_processes(self, processes) -> None:
        """At the end of an epoch under torchrun: merge per-sample state that each process wrote for its
        own samples (`processes.merge_rows`), so every process holds all of it next epoch."""

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters a method adds beside the student's (adapters, heads)."""
        return []

    def state_dict(self) -> dict:
        """Method state that a resumed run needs (e.g. PS-KD's prediction buffer)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
