"""LSSKD: layered self-supervised knowledge distillation ("A Layered Self-Supervised Knowledge
Distillation Framework for Efficient Multimodal Learning on the Edge"; only the abstract was available;
METHODS.md section 9).

No teacher. Small classifiers (heads) on the student's intermediate features solve a harder,
self-supervised version of the task: each sample comes in 4 transformed copies, stacked so that copy k
of sample i is row 4i + k, with the joint label y^ = 4y + k (4K classes). Each head learns the joint
distribution of the next deeper head, deep -> shallow, one to one:

    L = CE(y, softmax(z[0::4])) + w_aux * sum_l CE(y^, softmax(a_l))
        + w_kl * T^2 * sum_{l<L} KL(softmax(sg(a_{l+1}) / T) || softmax(a_l / T))
        [+ w_align * sum_{l<L} mean_d (f_l - sg(f_{l+1}))^2, head features after pooling; 0 by default]

every term on all 4N rows (batchmean) except the final CE, which sees the unrotated rows only. A head's
class logits are the sum of its 4 joint logits per class. Defaults: T = 3 (HSAKD's), w_kl = 1, w_aux = 1.

The heads sit on every "stageK" feature tap (head L on the last stage; "embedding" when a model has no
stages). Head l is built like HSAKD's auxiliary classifier: one block per later stage (a BasicBlock of
kdlib's CIFAR ResNet for images, strided like the stage; conv1d-BN-ReLU for signals; linear-ReLU for
vectors), one block at its own stage for the last head, then global average pooling and a linear layer
to 4K. HSAKD stacks n blocks per stage, kdlib one (the same for resnet8x4, n = 1). Gradients of the
heads flow into the backbone (HSAKD's own-training path, `grad=True`; its `grad=False` trains heads on
a frozen backbone). The heads are `extra_parameters()` trained by the student's optimizer, held by the
distiller and saved in its state: the student keeps its plain architecture, and `model.pt` loads into
the plain model (a test checks it).

The 4-way self-supervised transform (`transform: auto` picks by the shape of one sample):
- images [C, H, W], square: rot90 by k * 90 degrees in the (H, W) plane (HSAKD's `torch.rot90(x, k, (2, 3))`);
  non-square images: flips (k = 0 identity, 1 flip W, 2 flip H, 3 both, i.e. rotation by 180 degrees);
- 1-D signals [L] or [C, L] (mnist1d): k = 0 identity, 1 time reversal, 2 negation, 3 reversal and negation;
- 2-D points [2] (toy2d): rotation of the plane by k * 90 degrees.
Each is a group of 4 transforms, so every copy is a different, recognisable view.

Checked against winycg/HSAKD (`train_teacher_cifar.py`: the stacking `stack([rot90(x, k)], 1).view(-1, ...)`,
labels `4 * y + k`, CE on `logits[0::4]`, class logits `stack(split(ss_logits, 4, dim=1), 1).sum(2)`;
`models/resnet.py`: `Auxiliary_Classifier`). LSSKD's own code and exact loss were not available; the
layered KL above is METHODS.md's [D] reconstruction.

Pitfalls kept in view: BatchNorm statistics come from all 4N rows, rotated copies included (as in
HSAKD), so the saved running statistics are those of the mixture; the batch is 4x larger in memory.
The gradient probe watches the unrotated final logits; only the final CE reaches them, so it reads
plain CE's gradient by construction (the heads act through the features).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlib.data.base import Batch, first_samples
from kdlib.methods.base import Distiller, MethodContext, StepOutput, Value, common_values, true_class_prob
from kdlib.methods.kd import kd_loss_per_sample
from kdlib.models import FeatureTaps, feature_names
from kdlib.models.resnet_cifar import BasicBlock
from kdlib.schedules import Schedulable
from kdlib.spec import Spec

COPIES = 4
Transform = Literal["rot90", "flips", "signal", "plane"]


class Params(Spec):
    temperature: Schedulable(gt=0) = Field(3.0, description="T of the layered KL between heads (HSAKD's 3)")
    w_aux: Schedulable(ge=0) = Field(1.0, description="weight of every head's cross-entropy on the joint labels")
    w_kl: Schedulable(ge=0) = Field(1.0, description="weight of T^2 KL(deeper head || shallower head), per pair")
    w_align: Schedulable(ge=0) = Field(
        0.0, description="weight of the L2 alignment of each head's pooled features to the next deeper head's"
    )
    taps: list[str] | None = Field(
        None, description="feature taps that get a head, shallow to deep (default: every stageK tap)"
    )
    transform: Literal["auto", "rot90", "flips", "signal", "plane"] = Field(
        "auto",
        description="the 4-way self-supervised transform: auto = rot90 for square images, flips for others, "
        "signal (reverse / negate) for 1-D signals, plane rotation for 2-D points",
    )

    def feature_problems(self, student_taps: list[str] | None, teacher_taps: list[str] | None) -> list[str]:
        """The taps given must be the student's (its taps, known before anything trains)."""
        unknown = [t for t in self.taps or [] if student_taps is not None and t not in student_taps]
        if not unknown:
            return []
        verb = "is not a feature tap" if len(unknown) == 1 else "are not feature taps"
        return [f"method.taps: {', '.join(map(repr, unknown))} {verb} of the student; it has {', '.join(student_taps)}"]


def pick_transform(sample_shape: tuple[int, ...]) -> Transform:
    """The transform that suits samples of this shape (batch dim excluded)."""
    if len(sample_shape) == 3:
        return "rot90" if sample_shape[1] == sample_shape[2] else "flips"
    if len(sample_shape) == 1 and sample_shape[0] == 2:
        return "plane"
    if len(sample_shape) in (1, 2):
        return "signal"
    raise ValueError(f"lsskd has no 4-way transform for samples of shape {list(sample_shape)}")


def transform4(x: Tensor, k: int, kind: Transform) -> Tensor:
    """Copy k (0..3) of a batch under one of the 4-way transforms; k = 0 is the identity."""
    if kind == "rot90":
        return torch.rot90(x, k, (-2, -1))
    if kind == "plane":  # (u, v) -> (-v, u), k times
        for _ in range(k):
            x = torch.stack([-x[:, 1], x[:, 0]], 1)
        return x
    if kind == "flips":
        dims = [d for bit, d in ((1, -1), (2, -2)) if k & bit]
    else:  # signal: bit 1 reverses time, bit 2 negates
        dims = [-1] if k & 1 else []
    out = torch.flip(x, dims) if dims else x
    return -out if kind == "signal" and k & 2 else out


def stack_copies(x: Tensor, kind: Transform) -> Tensor:
    """[N, ...] -> [4N, ...] with copy k of sample i at row 4i + k."""
    return torch.stack([transform4(x, k, kind) for k in range(COPIES)], 1).flatten(0, 1)


def joint_labels(labels: Tensor) -> Tensor:
    """y^ = 4y + k for row 4i + k: the class and the transform in one label of 4K classes."""
    return (COPIES * labels[:, None] + torch.arange(COPIES, device=labels.device)).flatten()


def class_logits(joint_logits: Tensor) -> Tensor:
    """[R, 4K] -> [R, K]: the sum of a class's 4 joint logits (HSAKD's split by 4 and sum)."""
    return joint_logits.view(joint_logits.shape[0], -1, COPIES).sum(-1)


def transform_correct(joint_logits: Tensor) -> Tensor:
    """Per row: is the transform k the most likely one, classes marginalised out (log-sum-exp)?"""
    predicted = joint_logits.float().view(joint_logits.shape[0], -1, COPIES).logsumexp(1).argmax(1)
    truth = torch.arange(COPIES, device=joint_logits.device).repeat(joint_logits.shape[0] // COPIES)
    return (predicted == truth).float()


def per_original(values: Tensor) -> Tensor:
    """[4N] row values -> [N]: the mean over each sample's 4 copies."""
    return values.view(-1, COPIES).mean(1)


def layered_kl_per_row(head_logits: list[Tensor], temperature: float) -> list[Tensor]:
    """T^2 KL(softmax(sg(a_{l+1})/T) || softmax(a_l/T)) per row for l < L: each head learns the next deeper one."""
    return [
        kd_loss_per_sample(shallow, deep.detach(), temperature)
        for shallow, deep in zip(head_logits[:-1], head_logits[1:], strict=True)
    ]


def alignment_per_row(head_features: list[Tensor]) -> list[Tensor]:
    """mean_d (f_l - sg(f_{l+1}))^2 per row for l < L: the optional feature alignment."""
    return [
        (shallow.float() - deep.detach().float()).pow(2).mean(1)
        for shallow, deep in zip(head_features[:-1], head_features[1:], strict=True)
    ]


def lsskd_step_output(
    labels: Tensor,
    final_logits: Tensor,
    head_logits: list[Tensor],
    head_features: list[Tensor] | None,
    temperature: float,
    w_aux: float,
    w_kl: float,
    w_align: float,
) -> StepOutput:
    """The LSSKD loss; `final_logits` are the unrotated rows [N, K], heads give [4N, 4K] joint logits."""
    joint = joint_labels(labels)
    ce = F.cross_entropy(final_logits.float(), labels, reduction="none")
    aux = [F.cross_entropy(a.float(), joint, reduction="none") for a in head_logits]
    kls = layered_kl_per_row(head_logits, temperature)
    aligns = alignment_per_row(head_features) if head_features is not None else []
    loss_per_sample = ce.clone()
    for weight, rows in ((w_aux, aux), (w_kl, kls), (w_align, aligns)):
        for row_values in rows:
            loss_per_sample = loss_per_sample + weight * per_original(row_values)
    terms = {
        "loss_ce": ce.mean().detach(),
        "loss_aux": sum(a.mean() for a in aux).detach(),
        "loss_kl": sum((k.mean() for k in kls), torch.zeros((), device=ce.device)).detach(),
    }
    if head_features is not None:
        terms["loss_align"] = sum((a.mean() for a in aligns), torch.zeros((), device=ce.device)).detach()
    per_sample = {"loss_per_sample": loss_per_sample.detach(), "p_true_student": true_class_prob(final_logits, labels)}
    for level, a in enumerate(head_logits, start=1):
        unrotated = a[0::COPIES].detach()
        correct = transform_correct(a.detach())
        per_sample[f"p_true_head{level}"] = true_class_prob(class_logits(unrotated), labels)
        per_sample[f"p_joint_head{level}"] = true_class_prob(unrotated, joint[0::COPIES])
        per_sample[f"rot_acc_head{level}"] = per_original(correct)
        terms[f"rot_acc_head{level}"] = correct.mean()
    for level, kl in enumerate(kls, start=1):
        per_sample[f"kl_head{level}"] = per_original(kl.detach()) / temperature**2
    return StepOutput(loss_per_sample.mean(), terms, per_sample)


def _block(source: tuple[int, ...], target: tuple[int, ...]) -> nn.Module:
    """One stage-like block from features shaped `source` to `target` (batch dim excluded)."""
    if len(source) == 1:
        return nn.Sequential(nn.Linear(source[0], target[0]), nn.ReLU())
    stride = max(1, round(source[1] / target[1]))
    if len(source) == 3:
        return BasicBlock(source[0], target[0], stride)
    conv = nn.Conv1d(source[0], target[0], 3, stride, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm1d(target[0]), nn.ReLU())


class AuxHead(nn.Module):
    """Stage-like blocks up to the deepest tap's shape, pooling, a linear layer to 4K joint logits."""

    def __init__(self, shapes: list[tuple[int, ...]], level: int, num_outputs: int) -> None:
        super().__init__()
        here = shapes[level]
        later = [s for s in shapes[level + 1 :] if len(s) == len(here)] or [here]
        blocks, current = [], here
        for target in later:
            blocks.append(_block(current, target))
            current = target
        self.blocks = nn.Sequential(*blocks)
        self.pool = (
            nn.Flatten()
            if len(current) == 1
            else nn.Sequential(nn.AdaptiveAvgPool2d(1) if len(current) == 3 else nn.AdaptiveAvgPool1d(1), nn.Flatten())
        )
        self.fc = nn.Linear(current[0], num_outputs)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.pool(self.blocks(features))
        return pooled, self.fc(pooled)


def default_taps(model: nn.Module) -> list[str]:
    stages = [name for name in feature_names(model) if name.startswith("stage")]
    return stages or ["embedding"]


@torch.no_grad()
def feature_shapes(model: nn.Module, taps: list[str], x: Tensor) -> list[tuple[int, ...]]:
    """The shape of each tapped feature for one sample, from an eval-mode pass over a couple of samples."""
    was_training = model.training
    model.eval()
    with FeatureTaps(model, taps) as recorded:
        model(x)
    model.train(was_training)
    return [tuple(recorded.features[name].shape[1:]) for name in taps]


class LSSKD(Distiller):
    Params = Params
    per_sample_values = common_values("loss_per_sample", "p_true_student") | {
        "p_true_head{n}": Value("p(true) head {n}", "head n's probability of the true class (its joint logits summed over the transforms)"),
        "p_joint_head{n}": Value("p(joint) head {n}", "head n's probability of the true (class, transform) label of the unrotated copy"),
        "rot_acc_head{n}": Value("transform accuracy head {n}", "the share of the sample's 4 copies whose transform head n names right"),
        "kl_head{n}": Value("KL(head {n+1} || head {n})", "the layered KL from the next deeper head, at T"),
    }

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        super().__init__(params, student, teacher, context)
        if context.train is None:
            raise ValueError("method 'lsskd' needs the training split to size its heads")
        sample = first_samples(context.train, 2).to(context.device)
        self.kind: Transform = (
            pick_transform(tuple(sample.shape[1:])) if params.transform == "auto" else params.transform
        )
        self.taps = list(params.taps) if params.taps else default_taps(student)
        shapes = feature_shapes(student, self.taps, sample)
        joint_classes = COPIES * context.num_classes
        self.heads = nn.ModuleList(AuxHead(shapes, level, joint_classes) for level in range(len(shapes)))
        self.heads.to(context.device)
        widths = {head.fc.in_features for head in self.heads}
        self.alignable = len(widths) == 1
        if not self.alignable and params.w_align != 0:
            raise ValueError(f"method.w_align: the heads' pooled features differ in width ({sorted(widths)})")

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.heads.train()

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def forward(self, batch: Batch) -> StepOutput:
        copies = stack_copies(batch.x, self.kind)
        with FeatureTaps(self.student, self.taps) as recorded:
            logits = self.student(copies)
        outputs = [head(recorded.features[name]) for head, name in zip(self.heads, self.taps, strict=True)]
        final = logits[0::COPIES]  # the unrotated copies: the only rows with a class label
        out = lsskd_step_output(
            batch.y,
            final,
            [logits for _, logits in outputs],
            [features for features, _ in outputs] if self.alignable else None,
            self.coefficient("temperature"),
            self.coefficient("w_aux"),
            self.coefficient("w_kl"),
            self.coefficient("w_align"),
        )
        out.logits = final
        return out

    def state_dict(self) -> dict:
        return {"heads": self.heads.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
