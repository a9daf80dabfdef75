"""DFA: differentiable feature aggregation search (Guan, Zhao, Wang, Zhang, Yao, Bian, Tang, ECCV 2020,
"Differentiable Feature Aggregation Search for Knowledge Distillation").

One teacher offers several feature maps per stage; a softmax-weighted mix of them acts like several
teachers. Two stages (METHODS.md section 8):

    candidates of student stage i:  F_t^{i,1..J}                       a^i = softmax(alpha^i)  (over j)
    aggregated target:               A^i = sum_j a^i_j P_j(F_t^{i,j})  (P_j: identity, or an adapter, below)
    1. search (prepare, before epoch 0), first-order DARTS on two halves of the training split:
       weight step on the train half:    min_w  L_bridge(w, sg(alpha))
       alpha step on the held-out half:   min_alpha  L_bridge(w, alpha)    (Adam, lr 3e-4, betas (0.5, 0.999))
       L_bridge = sum_i  CE(T^{>i}(C'_i(F_s^i)), y)   student-to-teacher: can the student's feature stand in?
                       + CE(S^{>i}(R_i(A^i)), y)      teacher-to-student: can the student's layers use A^i?
    2. distil, alpha frozen:  L = CE(y, softmax(z_s)) + beta sum_i d_i
       d_i = 2^-(n-i) sum_{c,h,w} (C_i(F_s^i) - max(A^i, m_i))^2 [(C_i(F_s^i) > max(A^i, m_i)) or (A^i > 0)]

Recorded: the search's softmax(alpha) as `dfa.alpha.stage{i}.{j}` (j = 1 the shallowest candidate; the
module paths come from `candidate_names()`) with the bridge losses, at epoch -1 every
`search_log_every` steps; per sample `feature_loss` (sum_i d_i), `feature_loss_stage{i}`, `ce`,
`p_true_student`, `loss_per_sample`.

Candidates [our rule]: the student's stage taps stage1..stageN are matched in order to N contiguous
groups of the teacher's stage taps (a deeper teacher's extra stages are grouped: 6 teacher stages
for 3 student stages give pairs; the first groups take the remainder). Each teacher stage of a group
offers its output; with `within_stage`, a stage made of repeated blocks (an nn.Sequential of >= 2
children of one class, found through single-child wrappers: the ResNet/WRN layers) offers each
block's output instead, i.e. the depths inside the stage. The group's last candidate (its output)
sets the aggregate's shape; any candidate of another shape is mapped to it by a learned adapter P_j
(1x1 conv or linear + BN, average pooling where lengths differ) trained in the search's weight step
and frozen afterwards. [N, C], [N, C, L] and [N, C, H, W] features are all handled. Where every
stage has a single candidate (e.g. cnn1d student and teacher of equal depth) there is nothing to
search, and the search is skipped.

The teacher is a supernet [our reading of "unified architecture parameters"]: every group's output
is replaced by its aggregate A^i, so later stages see aggregated features, and alpha enters both
paths: T^{>i} (teacher stages after group i, their aggregates, the head) in the student-to-teacher
path, A^i (which depends on alpha^{<=i}) in the teacher-to-student path. The two pull alpha apart
(expressive for the teacher's layers vs usable by the student's). With every alpha one-hot on its
group's last candidate this is the plain teacher. The paths replace a stage tap's output through a
forward hook, so "the remaining stages" exist for any model whose stage taps feed the rest of the
network in sequence (all kdlib models). The search trains a copy of the student (w: the copy, the
connectors C'_i and R_i, the adapters P_j); the run's student starts distillation from its
initialization, as the paper's second stage does. The teacher stays frozen and in eval mode.

D is the Overhaul (OFD) partial L2: margin m_i per channel from the last BatchNorm of the group's
last teacher stage (the expectation of the negative part of N(bias, weight^2), -3|weight| where that
part is tiny); a teacher stage without such BN (an MLP) gives plain L2. kdlib's taps are stage
outputs, after the ReLU where the model has one, so max(A, m) = A and the mask drops only positions
where the teacher is 0 and the student below it; OFD proper reads pre-ReLU features, which taps
cannot reach generically. Stage weights 2^-(n-i) (the last stage 1) and beta = 1/1000 per sample
are the official OFD CIFAR-100 code's (its issue #27: alpha = 1/1000 in the paper's Eq. 6; an
earlier version and issue #12 had 1/10000, the value METHODS.md quotes). The connectors C_i
(1x1 conv or linear + BN, OFD's `build_feature_connector`) train with the student's optimizer.

Checked against clovaai/overhaul-distillation `CIFAR-100/distiller.py` (loss, mask, margin,
connector) and `train_with_distillation.py`. No official DFA code exists in the store and only
the abstract was readable: the bridge paths' exact form, the supernet, the search optimizer of the
weights (Adam, `search_lr`) and the budget are ours [D]. alpha's Adam (lr 3e-4, betas (0.5, 0.999),
weight decay 1e-3) is DARTS's default.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from kdlib.data.base import Batch
from kdlib.methods.base import Distiller, MethodContext, StepOutput, Value, common_values, true_class_prob
from kdlib.methods.dfa_modules import (
    Search,
    StagePlan,
    endless_batches,
    forward_hooks,
    make_connector,
    split_in_two,
)
from kdlib.models.base import FeatureTaps
from kdlib.schedules import Schedulable
from kdlib.spec import MAX_SEED, Spec


class Params(Spec):
    beta: Schedulable(ge=0) = Field(
        1e-3, description="beta: weight of the feature term, summed over elements per sample (OFD CIFAR-100: 1/1000)"
    )
    stages: list[PositiveInt] | None = Field(
        None, description="the student stages distilled, 1-based (default: every stage tap stage1..stageN)"
    )
    within_stage: bool = Field(
        True, description="a teacher stage of repeated blocks offers each block's output as a candidate"
    )
    search_steps: int = Field(
        100, ge=0, description="search budget: alternations of a weight step and an alpha step (0: uniform weights)"
    )
    # at least 2: the search's connectors hold BatchNorm, which a batch of one sample cannot train
    search_batch_size: int = Field(64, ge=2, description="batch size of the search's steps")
    search_lr: float = Field(1e-3, gt=0, description="Adam lr of the search's weights (student copy, connectors)")
    alpha_lr: float = Field(3e-4, gt=0, description="Adam lr of the aggregation logits alpha (DARTS default)")
    held_out_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of the training split held out for the alpha steps"
    )
    search_log_every: PositiveInt = Field(5, description="record the aggregation weights every this many steps")
    search_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the held-out split and of the search's batch order")

    def feature_problems(self, student_taps: list[str] | None, teacher_taps: list[str] | None) -> list[str]:
        """Stage taps on both models, and stages the student has (the models' taps, known before anything trains)."""
        if student_taps is None or teacher_taps is None:
            return []
        student = [t for t in student_taps if t.startswith("stage")]
        teacher = [t for t in teacher_taps if t.startswith("stage")]
        for role, stages in (("student", student), ("teacher", teacher)):
            if not stages:
                return [f"method: 'dfa' distils stage features, and the {role} has no stage taps (it has "
                        f"{', '.join(student_taps if role == 'student' else teacher_taps)}); give it stages, e.g. "
                        "a cnn or resnet, or an mlp with hidden layers"]
        chosen = self.stages or list(range(1, len(student) + 1))
        if max(chosen) > len(student):
            return [f"method.stages: {chosen}, but the student has stages 1..{len(student)}"]
        groups = teacher_groups(len(teacher), len(student))
        used = [g for i in chosen for g in groups[i - 1]]
        if len(used) != len(set(used)):
            return [f"method.stages: the teacher has {len(teacher)} stages for {len(chosen)} student stages; choose "
                    f"at most {len(teacher)} student stages"]
        return []


# --- pure tensor functions -----------------------------------------------------------------------


def aggregate(candidates: list[Tensor], alpha: Tensor) -> Tensor:
    """A = sum_j softmax(alpha)_j F_j; candidates share one shape, alpha has one logit per candidate."""
    if len(candidates) != alpha.shape[0]:
        raise ValueError(f"{len(candidates)} candidates but {alpha.shape[0]} aggregation logits")
    weights = F.softmax(alpha, dim=0)
    return torch.tensordot(weights.to(candidates[0].dtype), torch.stack(candidates), dims=1)


def ofd_loss_per_sample(source: Tensor, target: Tensor, margin: Tensor | None) -> Tensor:
    """OFD's partial L2 per sample: sum (s - max(t, m))^2 where s > max(t, m) or t > 0.

    `margin` holds one value per channel (dim 1); None gives the plain squared error.
    """
    if source.shape != target.shape:
        raise ValueError(f"student feature {list(source.shape)} and teacher target {list(target.shape)} differ")
    if margin is None:
        return (source - target).pow(2).flatten(1).sum(1)
    margin = margin.view(1, -1, *([1] * (target.dim() - 2))).to(target.dtype)
    target = torch.maximum(target, margin)
    mask = (source > target) | (target > 0)
    return ((source - target).pow(2) * mask).flatten(1).sum(1)


def bn_margin(bn: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) -> Tensor:
    """E[x | x < 0] for x ~ N(bias, weight^2) per channel; -3|weight| where P(x < 0) <= 0.001 (OFD)."""
    std, mean = bn.weight.detach().abs().float(), bn.bias.detach().float()
    std = std.clamp_min(1e-12)
    below = torch.special.ndtr(-mean / std)
    expected = mean - std * torch.exp(-((mean / std) ** 2) / 2) / math.sqrt(2 * math.pi) / below.clamp_min(1e-12)
    return torch.where(below > 0.001, expected, -3 * std)


def stage_weights(n: int) -> list[float]:
    """OFD's 1 / 2^(n - i) for stages i = 1..n: the deepest counts 1, each shallower half as much."""
    return [1 / 2 ** (n - i) for i in range(1, n + 1)]


def teacher_groups(num_teacher: int, num_student: int) -> list[list[int]]:
    """Student stage i (0-based) gets teacher stages [end_{i-1}, end_i), end_i = ceil((i+1) n_t / n_s)."""
    groups, start = [], 0
    for i in range(num_student):
        end = math.ceil((i + 1) * num_teacher / num_student)
        groups.append(list(range(start, end)) if end > start else [end - 1])
        start = end
    return groups


def block_paths(model: nn.Module, path: str, within_stage: bool) -> list[str]:
    """The candidate module paths of one stage tap: its blocks if it is a run of repeated blocks, else itself."""
    if not within_stage:
        return [path]
    module, inner = model.get_submodule(path), path
    while len(children := list(module.named_children())) == 1:
        inner, module = f"{inner}.{children[0][0]}", children[0][1]
    if isinstance(module, nn.Sequential) and len(children) >= 2 and len({type(c) for _, c in children}) == 1:
        return [f"{inner}.{name}" for name, _ in children]
    return [path]


# --- modules ----------------------------------------------------------------------------------


class Aggregation(nn.Module):
    """One student stage's candidates, their adapters to the common shape, and the logits alpha."""

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        super().__init__()
        reference = shapes[-1]
        self.alpha = nn.Parameter(torch.zeros(len(shapes)))
        self.adapters = nn.ModuleList(nn.Identity() if s == reference else make_connector(s, reference) for s in shapes)

    def weights(self) -> Tensor:
        return F.softmax(self.alpha.detach(), dim=0)

    def forward(self, candidates: list[Tensor], detach_alpha: bool = False) -> Tensor:
        alpha = self.alpha.detach() if detach_alpha else self.alpha
        return aggregate([adapter(c) for adapter, c in zip(self.adapters, candidates, strict=True)], alpha)


# --- the distiller ------------------------------------------------------------------------------


class DFA(Distiller):
    Params = Params
    runs_on_several_processes = False  # its own optimizer steps are not shared across processes
    needs_teacher = True
    per_sample_values = common_values("p_true_student", "loss_per_sample") | {
        "ce": Value("CE", "the student's cross-entropy on the label"),
        "feature_loss": Value("feature loss", "the stage-weighted distance of the student's features to the aggregated teacher features"),
        "feature_loss_{tap}": Value("feature loss at {tap}", "that stage's weighted feature distance"),
    }

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        super().__init__(params, student, teacher, context)
        if context.train is None:
            raise ValueError("method 'dfa' needs the training split (its search holds half of it out)")
        self.plans = self._plan()
        student_shapes, candidate_shapes = self._probe_shapes()
        device = context.device
        self.aggregations = nn.ModuleList(Aggregation(shapes) for shapes in candidate_shapes).to(device)
        self.target_shapes = [shapes[-1] for shapes in candidate_shapes]
        self.student_shapes = student_shapes
        self.connectors = nn.ModuleList(
            make_connector(s, t) for s, t in zip(student_shapes, self.target_shapes, strict=True)
        ).to(device)
        self.margins = [self._margin(plan, shape) for plan, shape in zip(self.plans, self.target_shapes, strict=True)]
        self.weights = stage_weights(len(self.plans))
        self.searched = False

    # -- setup

    def _plan(self) -> list[StagePlan]:
        student_taps = [t for t in self.student.feature_taps if t.startswith("stage")]
        teacher_taps = [t for t in self.teacher.feature_taps if t.startswith("stage")]
        if not student_taps or not teacher_taps:
            raise ValueError("method 'dfa' needs stage taps (stage1, stage2, ...) on both student and teacher")
        chosen = self.params.stages or list(range(1, len(student_taps) + 1))
        if max(chosen) > len(student_taps):
            raise ValueError(f"method.stages {chosen}: the student has stages 1..{len(student_taps)}")
        groups = teacher_groups(len(teacher_taps), len(student_taps))
        used = [g for i in chosen for g in groups[i - 1]]
        if len(used) != len(set(used)):
            raise ValueError(
                f"the teacher has {len(teacher_taps)} stages for {len(chosen)} student stages; "
                "choose at most that many student stages with method.stages"
            )
        plans = []
        for i in chosen:
            paths = [self.teacher.feature_taps[teacher_taps[g]] for g in groups[i - 1]]
            candidates = [c for p in paths for c in block_paths(self.teacher, p, self.params.within_stage)]
            tap = student_taps[i - 1]
            plans.append(StagePlan(tap, self.student.feature_taps[tap], candidates, paths[-1]))
        return plans

    @torch.no_grad()
    def _probe_shapes(self) -> tuple[list[tuple[int, ...]], list[list[tuple[int, ...]]]]:
        """Feature shapes (no batch dim) of the student's stages and of every candidate, from two samples."""
        x = next(iter(self.context.train.batches(2))).x.to(self.context.device)
        was_training = self.student.training
        self.student.eval()  # no BatchNorm statistics move for a probe
        with FeatureTaps(self.student, [p.student_tap for p in self.plans]) as taps:
            self.student(x)
        self.student.train(was_training)
        student_shapes = [tuple(taps.features[p.student_tap].shape[1:]) for p in self.plans]
        recorded = {}
        hooks = {c: self._recorder(recorded, c) for p in self.plans for c in p.candidates}
        with forward_hooks(self.teacher, hooks):
            self.teacher(x)
        return student_shapes, [[tuple(recorded[c].shape[1:]) for c in p.candidates] for p in self.plans]

    @staticmethod
    def _recorder(table: dict, key: str) -> Callable:
        def hook(module, args, output):
            table[key] = output

        return hook

    def _margin(self, plan: StagePlan, shape: tuple[int, ...]) -> Tensor | None:
        if len(shape) < 2:
            return None  # vectors: plain L2 (METHODS.md's margin belongs to conv features)
        norms = [
            m
            for m in self.teacher.get_submodule(plan.end).modules()
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.num_features == shape[0] and m.affine
        ]
        return bn_margin(norms[-1]).to(self.context.device) if norms else None

    # -- the aggregated teacher and the two paths

    def teacher_pass(
        self, x: Tensor, inject: dict[int, Tensor] | None = None, detach_alpha: bool = False
    ) -> tuple[Tensor, list[Tensor | None]]:
        """The teacher with each group's output replaced by its aggregate (or by `inject[i]`): logits, aggregates."""
        inject = inject or {}
        recorded: dict[str, Tensor] = {}
        aggregates: list[Tensor | None] = [None] * len(self.plans)
        actions: dict[str, list[Callable]] = {}
        for c in {c for p in self.plans for c in p.candidates}:
            actions.setdefault(c, []).append(lambda out, c=c: recorded.__setitem__(c, out))
        for i, plan in enumerate(self.plans):

            def replace(out, i=i, plan=plan):
                if i in inject:
                    return inject[i]
                aggregates[i] = self.aggregations[i]([recorded[c] for c in plan.candidates], detach_alpha)
                return aggregates[i]

            actions.setdefault(plan.end, []).append(replace)

        hooks = {path: self._chain(steps) for path, steps in actions.items()}
        with forward_hooks(self.teacher, hooks):
            logits = self.teacher(x)
        return logits, aggregates

    @staticmethod
    def _chain(steps: list[Callable]) -> Callable:
        """One forward hook running `steps` in order; a step that returns a tensor replaces the output."""

        def hook(module, args, output):
            for step in steps:
                replaced = step(output)
                output = output if replaced is None else replaced
            return output

        return hook

    def bridge_loss(self, search: Search, batch: Batch, detach_alpha: bool) -> Tensor:
        """sum_i CE of the student-to-teacher path plus CE of the teacher-to-student path, for stage i."""
        names = [p.student_tap for p in self.plans]
        with FeatureTaps(search.student, names) as taps:
            search.student(batch.x)
        student_features = [taps.features[n] for n in names]
        _, aggregates = self.teacher_pass(batch.x, detach_alpha=detach_alpha)
        total = batch.x.new_zeros((), dtype=torch.float32)
        for i, plan in enumerate(self.plans):
            injected = {i: search.to_teacher[i](student_features[i])}
            to_teacher_logits, _ = self.teacher_pass(batch.x, injected, detach_alpha)
            bridged = search.to_student[i](aggregates[i])
            with forward_hooks(search.student, {plan.student_path: lambda m, a, o, b=bridged: b}):
                to_student_logits = search.student(batch.x)
            total = total + F.cross_entropy(to_teacher_logits.float(), batch.y)
            total = total + F.cross_entropy(to_student_logits.float(), batch.y)
        return total

    # -- the search

    def start_search(self) -> Search:
        device = self.context.device
        student = copy.deepcopy(self.student).train()
        to_teacher = nn.ModuleList(
            make_connector(s, t) for s, t in zip(self.student_shapes, self.target_shapes, strict=True)
        ).to(device)
        to_student = nn.ModuleList(
            make_connector(t, s) for s, t in zip(self.student_shapes, self.target_shapes, strict=True)
        ).to(device)
        self.aggregations.train()
        alphas = [a.alpha for a in self.aggregations]
        adapters = [p for a in self.aggregations for p in a.adapters.parameters()]
        weights = [*student.parameters(), *to_teacher.parameters(), *to_student.parameters(), *adapters]
        return Search(
            student,
            to_teacher,
            to_student,
            weights,
            alphas,
            torch.optim.Adam(weights, lr=self.params.search_lr),
            torch.optim.Adam(alphas, lr=self.params.alpha_lr, betas=(0.5, 0.999), weight_decay=1e-3),
        )

    def weight_step(self, search: Search, batch: Batch) -> float:
        """One step of the weights on a train-half batch; alpha is detached and gets no gradient."""
        loss = self.bridge_loss(search, batch, detach_alpha=True)
        search.weight_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=search.weights)
        search.weight_optimizer.step()
        return loss.item()

    def alpha_step(self, search: Search, batch: Batch) -> float:
        """One step of alpha on a held-out batch (first-order DARTS: the weights are taken as they are)."""
        loss = self.bridge_loss(search, batch, detach_alpha=False)
        search.alpha_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=search.alphas)
        search.alpha_optimizer.step()
        search.alpha_optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def alpha_scalars(self) -> dict[str, float]:
        """dfa.alpha.stage{i}.{j}: the weight of candidate j (1 = shallowest) for student stage i."""
        return {
            f"dfa.alpha.{plan.student_tap}.{j + 1}": w
            for plan, aggregation in zip(self.plans, self.aggregations, strict=True)
            for j, w in enumerate(aggregation.weights().tolist())
        }

    def candidate_names(self) -> dict[str, list[str]]:
        """For each student stage, the teacher module path of each candidate, shallow to deep."""
        return {plan.student_tap: list(plan.candidates) for plan in self.plans}

    def prepare(self, log: Callable[[int, dict[str, float]], None]) -> None:
        self.teacher.eval()
        if not self.searched:
            self.search(log)
        self.aggregations.eval().requires_grad_(False)  # the found aggregation is frozen for distillation

    def search(self, log: Callable[[int, dict[str, float]], None]) -> None:
        log(0, self.alpha_scalars())
        if all(len(plan.candidates) == 1 for plan in self.plans):
            self.searched = True  # nothing to choose between: every stage has a single candidate
            return
        p = self.params
        train_half, held_out = split_in_two(self.context.train, p.held_out_fraction, p.search_seed)
        generator = torch.Generator().manual_seed(p.search_seed)
        train_batches = endless_batches(train_half, p.search_batch_size, generator)
        held_out_batches = endless_batches(held_out, p.search_batch_size, generator)
        search = self.start_search()
        for step in range(1, p.search_steps + 1):
            train_loss = self.weight_step(search, next(train_batches).to(self.context.device))
            held_out_loss = self.alpha_step(search, next(held_out_batches).to(self.context.device))
            if step % p.search_log_every == 0 or step == p.search_steps:
                scalars = {"dfa.search.loss_train": train_loss, "dfa.search.loss_held_out": held_out_loss}
                log(step, {**self.alpha_scalars(), **scalars})
        self.searched = True

    # -- distillation

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.connectors.train()
        self.aggregations.eval()

    def forward(self, batch: Batch) -> StepOutput:
        with torch.no_grad():
            _, targets = self.teacher_pass(batch.x)
        names = [p.student_tap for p in self.plans]
        with FeatureTaps(self.student, names) as taps:
            logits = self.student(batch.x)
        ce = F.cross_entropy(logits.float(), batch.y, reduction="none")
        stage_losses = [
            w * ofd_loss_per_sample(connector(taps.features[n]).float(), target.float(), margin)
            for w, connector, n, target, margin in zip(
                self.weights, self.connectors, names, targets, self.margins, strict=True
            )
        ]
        feature_loss = torch.stack(stage_losses).sum(0)
        per_sample_loss = ce + self.coefficient("beta") * feature_loss
        per_sample = {
            "p_true_student": true_class_prob(logits.detach(), batch.y),
            "loss_per_sample": per_sample_loss.detach(),
            "ce": ce.detach(),
            "feature_loss": feature_loss.detach(),
        }
        per_sample |= {f"feature_loss_{n}": d.detach() for n, d in zip(names, stage_losses, strict=True)}
        terms = {"loss_ce": ce.mean().detach(), "loss_feature": feature_loss.mean().detach()}
        return StepOutput(per_sample_loss.mean(), terms, per_sample, logits=logits)

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.connectors.parameters())

    def state_dict(self) -> dict:
        return {
            "searched": torch.tensor(self.searched),
            "aggregations": self.aggregations.state_dict(),
            "connectors": self.connectors.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.aggregations.load_state_dict(state["aggregations"])
        self.connectors.load_state_dict(state["connectors"])
        self.searched = bool(state["searched"])
