"""RCO: route-constrained optimization (Jin et al., ICCV 2019, "Knowledge Distillation via Route
Constrained Optimization").

A converged teacher is a hard target for a small student. The teacher's own training passed through
easier states, so the student imitates its checkpoints in order (the anchors), easy to hard, and
ends on the converged teacher. Each stage uses the Hinton KD loss with the anchor as teacher:

    L = w_ce * CE(y, softmax(z_s)) + w_kd * T^2 * KL(softmax(z_a / T) || softmax(z_s / T))

Anchor schedules (METHODS.md section 3 and 6):
- equal interval: anchors a_k = ceil(k * E_T / M), k = 1..M, the last always the converged teacher;
  the student's epochs are split equally among them (the LR schedule is not restarted).
- list: explicit teacher epochs, and optionally the student epoch at which each takes over.
- greedy [our rule; the paper's exact criterion could not be checked]: at the start of each stage,
  on a probe set of training samples, d(c) = mean KL(p_c^T || p_s^T) for every later checkpoint c;
  the next anchor is the furthest c with d(c) <= rho * d(reference), where the reference is the
  previous anchor measured at the start of its own stage (for the first stage: the earliest checkpoint).
  Every stage lasts `stage_epochs` student epochs; the converged teacher keeps the rest.

The anchors are teachers of batches (`TeacherRoute.teacher`): the engine serves their logits from
the teacher-output cache where it applies, as it serves the converged teacher's.
Checked against KD_Lib's reimplementation (`KD_Lib/KD/vision/RCO/rco.py`), without its quirks: no
double softmax in CE, KL summed over classes and averaged over the batch, anchors in eval mode.
The original RCO code was not available.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from kdlib.data.base import Batch
from kdlib.methods.base import Distiller, MethodContext, StepOutput, Value, common_values, true_class_prob
from kdlib.methods.kd import kd_step, softened_kl
from kdlib.schedules import Schedulable
from kdlib.spec import Section, Spec

DEFAULT_ANCHORS = 4


class EqualInterval(Section):
    """n evenly spaced: M checkpoints spread evenly over the teacher's route, the last its converged state"""

    kind: Literal["equal_interval"] = "equal_interval"
    num_anchors: int | None = Field(
        None,
        ge=1,
        description="M: anchors spread evenly over the teacher's route, the last being the converged teacher "
        f"(null: {DEFAULT_ANCHORS}, or fewer where the route's saved epochs or the run's epochs are fewer)",
    )

    def count(self, route: list[int], total_epochs: int) -> int:
        return self.num_anchors or min(DEFAULT_ANCHORS, len(route), total_epochs)


class AnchorList(Section):
    """chosen epochs: the teacher's saved epochs you pick, in order; the converged teacher is added last"""

    kind: Literal["list"] = "list"
    teacher_epochs: list[int] = Field(
        min_length=1,
        description="the teacher epochs used as anchors, in order",
        json_schema_extra={"choices_from": "teacher_route"},  # forms offer the route's saved epochs
    )
    student_epochs: list[int] | None = Field(
        None,
        description="the student epoch at which each anchor takes over (default: an equal split); the first must be 0",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AnchorList:
        if self.teacher_epochs != sorted(set(self.teacher_epochs)):
            raise ValueError(f"teacher_epochs must increase strictly, got {self.teacher_epochs}")
        if self.student_epochs is not None:
            if len(self.student_epochs) != len(self.teacher_epochs):
                raise ValueError("student_epochs needs one entry per teacher epoch")
            if self.student_epochs[0] != 0 or self.student_epochs != sorted(set(self.student_epochs)):
                raise ValueError(f"student_epochs must start at 0 and increase strictly, got {self.student_epochs}")
        return self


class Greedy(Section):
    """greedy: each stage, the furthest checkpoint the student can still follow (by its KL on a probe set)"""

    kind: Literal["greedy"] = "greedy"
    rho: float = Field(
        2.0,
        gt=1,
        description="a checkpoint is followable while its KL to the student is at most rho times the reference KL",
    )
    stage_epochs: int = Field(5, ge=1, description="student epochs spent on each anchor before the next is chosen")
    probe_size: int = Field(1000, ge=10, description="training samples on which the KLs are measured")


AnchorSpec = Annotated[EqualInterval | AnchorList | Greedy, Field(discriminator="kind")]


class Params(Spec):
    anchors: AnchorSpec = Field(default_factory=EqualInterval, description="how anchors are chosen on the route")
    temperature: Schedulable(gt=0) = Field(4.0, description="T: softens anchor and student distributions alike")
    w_ce: Schedulable(ge=0) = Field(0.1, description="weight of cross-entropy on the labels")
    w_kd: Schedulable(ge=0) = Field(0.9, description="weight of the soft term T^2 KL(anchor || student)")

    def route_problems(self, route: list[int], saved: str, total_epochs: int) -> list[str]:
        """What keeps these anchors off the teacher's `route` (its saved epochs, known before it trains; `saved`
        says where they come from) or out of the run's epochs: one `field: problem; fix` line each."""
        a, where = self.anchors, "method.anchors"
        if not route:
            return [f"{where}: RCO follows the teacher's route, but {saved}; save epochs with teacher.route, e.g. "
                    "{every: 1}, or give a checkpoint folder with route/epoch_XXXX.pt files"]
        if isinstance(a, Greedy):
            return []
        if isinstance(a, AnchorList) and (missing := [e for e in a.teacher_epochs if e not in route]):
            return [f"{where}.teacher_epochs: {', '.join(map(str, missing))} {'is' if len(missing) == 1 else 'are'} "
                    f"not on the teacher's route ({saved}); "
                    f"choose anchors among {route}, or save those epochs (teacher.route: {{epochs: [...]}}, with "
                    "teacher.epochs at least the last)"]
        if isinstance(a, EqualInterval) and a.num_anchors is not None:
            anchors = plan_anchors(a, route, total_epochs).teacher_epochs
            if len(anchors) < a.num_anchors:
                spread = "" if len(route) < a.num_anchors else f", spread evenly, give {len(anchors)}: {anchors}"
                return [f"{where}.num_anchors: {a.num_anchors} anchors, but the teacher's route has {len(route)} "
                        f"saved epochs ({saved}){spread}; set num_anchors: {len(anchors)} or less, or save more "
                        "epochs (teacher.route)"]
        plan = plan_anchors(a, route, total_epochs)
        if len(plan.teacher_epochs) > total_epochs:
            return [f"{where}: {len(plan.teacher_epochs)} anchors ({plan.teacher_epochs}) need one student epoch "
                    f"each, and the run has {total_epochs} (epochs); raise epochs or use fewer anchors"]
        if isinstance(a, AnchorList) and a.student_epochs is not None:
            if len(a.student_epochs) != len(plan.teacher_epochs):
                return [f"{where}.student_epochs: the converged teacher (epoch {route[-1]}) is added as the last "
                        f"anchor, so {len(plan.teacher_epochs)} anchors need {len(plan.teacher_epochs)} student "
                        f"epochs; add one, or end teacher_epochs with {route[-1]}"]
            if late := [e for e in a.student_epochs if e >= total_epochs]:
                return [f"{where}.student_epochs: {', '.join(map(str, late))} {'is' if len(late) == 1 else 'are'} "
                        "past the run's last epoch "
                        f"({total_epochs - 1}, 0-based); keep them below epochs: {total_epochs}"]
        return []


def equal_interval_anchors(route_epochs: int, num_anchors: int) -> list[int]:
    """a_k = ceil(k * E_T / M) for k = 1..M: (240, 4) -> [60, 120, 180, 240]."""
    return [math.ceil(k * route_epochs / num_anchors) for k in range(1, num_anchors + 1)]


def equal_split(total_epochs: int, num_anchors: int) -> list[int]:
    """Student epochs at which each of M anchors takes over: floor((k-1) E_S / M)."""
    return [(k * total_epochs) // num_anchors for k in range(num_anchors)]


def snap_to_route(epochs: list[int], available: list[int]) -> list[int]:
    """Each wanted epoch replaced by the first saved checkpoint at or after it (the route may be sparse)."""
    snapped = [next((a for a in available if a >= e), available[-1]) for e in epochs]
    return sorted(set(snapped))


class AnchorSchedule:
    """Which teacher epoch supervises each student epoch: `value_at(epoch)`, plottable like a schedule."""

    def __init__(self, student_epochs: list[int], teacher_epochs: list[int]) -> None:
        self.student_epochs, self.teacher_epochs = list(student_epochs), list(teacher_epochs)

    def value_at(self, epoch: int, total_epochs: int | None = None) -> int:
        current = self.teacher_epochs[0]
        for start, anchor in zip(self.student_epochs, self.teacher_epochs, strict=True):
            if epoch >= start:
                current = anchor
        return current

    def curve(self, total_epochs: int) -> list[int]:
        return [self.value_at(e) for e in range(total_epochs)]


def plan_anchors(spec: EqualInterval | AnchorList, route: list[int], total_epochs: int) -> AnchorSchedule:
    """The fixed anchor schedules; the route is the list of saved teacher epochs (its last: converged)."""
    final = route[-1]
    if isinstance(spec, EqualInterval):
        teacher_epochs = snap_to_route(equal_interval_anchors(final, spec.count(route, total_epochs)), route)
    else:
        missing = [e for e in spec.teacher_epochs if e not in route]
        if missing:
            raise ValueError(
                f"method.anchors.teacher_epochs: {missing} are not on the teacher's route "
                f"(saved epochs: {route}); set teacher.route to save them"
            )
        teacher_epochs = spec.teacher_epochs if spec.teacher_epochs[-1] == final else [*spec.teacher_epochs, final]
        if spec.student_epochs is not None and len(teacher_epochs) == len(spec.student_epochs):
            return AnchorSchedule(spec.student_epochs, teacher_epochs)
    return AnchorSchedule(equal_split(total_epochs, len(teacher_epochs)), teacher_epochs)


def greedy_next_anchor(distances: dict[int, float], current: int | None, reference: float, rho: float) -> int:
    """The furthest checkpoint after `current` with d(c) <= rho * reference, else the next one."""
    later = sorted(c for c in distances if current is None or c > current)
    followable = [c for c in later if distances[c] <= rho * reference]
    return followable[-1] if followable else later[0]


class RCO(Distiller):
    Params = Params
    needs_teacher = True
    per_sample_values = common_values("loss_per_sample", "p_true_student", "p_true_teacher") | {
        "p_true_anchor": Value("p(true) anchor", "the current anchor's probability of the true class"),
        "kl_anchor": Value("KL(anchor || student)", "the student's distance from the anchor it follows, at T"),
        "kl_final": Value("KL(teacher || student)", "the student's distance from the converged teacher, at T"),
    }

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        super().__init__(params, student, teacher, context)
        if context.route is None or len(context.route.epochs) < 1:
            raise ValueError(
                "method 'rco' needs the teacher's route: train the teacher with `teacher.route` "
                "(e.g. {every: 1}) or give a checkpoint folder that has route/epoch_XXXX.pt files"
            )
        self.route = [e for e in context.route.epochs if e > 0]  # checkpoint 0 is the untrained teacher
        self.anchor_epoch: int | None = None
        self.greedy = isinstance(params.anchors, Greedy)
        if self.greedy:
            self.schedule = AnchorSchedule([], [])
            self._reference = None
        else:
            self.schedule = plan_anchors(params.anchors, self.route, context.total_epochs)
        self.anchor = None  # the current anchor, a teacher of batches

    def _probe_distances(self, temperature: float) -> dict[int, float]:
        """d(c) = mean KL(p_c^T || p_s^T) on a probe set of training samples, for every checkpoint c."""
        train = self.context.train
        x = next(train.batches(self.params.anchors.probe_size)).x.to(self.context.device)
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            student_logits = self.student(x).float()
            distances = {
                c: softened_kl(student_logits, self.context.route.load(c)(x).float(), temperature).mean().item()
                for c in self.route
            }
        self.student.train(was_training)
        return distances

    def _current_greedy_anchor(self) -> int | None:
        return self.schedule.teacher_epochs[-1] if self.schedule.teacher_epochs else None

    def _choose_greedy(self, epoch: int) -> None:
        distances = self._probe_distances(self.coefficient("temperature"))
        if self._reference is None:
            self._reference = distances[self.route[0]]
        current = self._current_greedy_anchor()
        anchor = greedy_next_anchor(distances, current, self._reference, self.params.anchors.rho)
        self._reference = distances[anchor]
        self.schedule.student_epochs.append(epoch)
        self.schedule.teacher_epochs.append(anchor)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if (
            self.greedy
            and epoch % self.params.anchors.stage_epochs == 0
            and self._current_greedy_anchor() != self.route[-1]
            and epoch not in self.schedule.student_epochs
        ):
            self._choose_greedy(epoch)
        anchor = self.schedule.value_at(epoch)
        if anchor != self.anchor_epoch:
            self.anchor_epoch = anchor
            self.anchor = self.context.route.teacher(anchor)

    def coefficients(self) -> dict[str, float]:
        return {**super().coefficients(), "anchor_epoch": float(self.anchor_epoch)}

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        temperature = self.coefficient("temperature")
        out = kd_step(student_logits, self.anchor(batch), batch.y, temperature, self.coefficient("w_ce"),
                      self.coefficient("w_kd"))
        values = out.per_sample
        values["kl_anchor"], values["p_true_anchor"] = values.pop("kl"), values.pop("p_true_teacher")
        values["p_true_teacher"] = true_class_prob(teacher_logits, batch.y)
        values["kl_final"] = softened_kl(student_logits.detach(), teacher_logits, temperature)
        return out

    def state_dict(self) -> dict:
        if not self.greedy:
            return {}
        return {
            "student_epochs": torch.tensor(self.schedule.student_epochs),
            "teacher_epochs": torch.tensor(self.schedule.teacher_epochs),
            "reference": torch.tensor(float(self._reference or 0.0)),
        }

    def load_state_dict(self, state: dict) -> None:
        if self.greedy and state:
            self.schedule = AnchorSchedule(state["student_epochs"].tolist(), state["teacher_epochs"].tolist())
            self._reference = float(state["reference"])
