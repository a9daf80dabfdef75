"""Recording: what a run keeps of its steps and epochs, the same for every method.

Each step's scalars and per-sample values are kept by reference in `ColumnTable`s (no host sync, no
tensor operation per step); at the epoch's end they are gathered by dataset index, the gradient
probe's rows become its per-sample values, the splits are evaluated, and `epoch_record` returns the
epoch's scalars and arrays for an `EpochEnded` event.
"""

from __future__ import annotations

import math

import torch

from kdlib.config import RunConfig
from kdlib.distributed import Processes
from kdlib.probes import evaluate, logit_gradient_stats, predict_splits


class NonFiniteLoss(RuntimeError):
    pass


class GradientProbe:
    """d loss_i / d z_i at the student's logits (`StepOutput.logits`) of every step, for every method.

    Read from the backward pass the step takes anyway (`retain_grad`), not recomputed at the epoch's
    end: a method's loss may depend on state its steps change (PS-KD's buffer, ProKT's moving
    teacher), so only the step itself knows the gradient it took. The loss is a batch mean, so the
    gradient at the logits is multiplied back by the batch size (and divided by the grad scaler's
    factor under fp16). At the epoch's end `per_sample` turns the rows into the probe's values.
    """

    def __init__(self, rows: int, device: torch.device) -> None:
        self.table = ColumnTable(rows, device)

    @staticmethod
    def watch(logits: torch.Tensor | None) -> torch.Tensor | None:
        """Keep the gradient at these logits after the backward pass; call before it."""
        if logits is None or not logits.requires_grad:
            return None
        logits.retain_grad()
        return logits

    def read(self, logits: torch.Tensor | None, index: torch.Tensor, loss_scale: float) -> None:
        """After the backward pass: keep the batch's logits and per-sample gradients (by reference)."""
        if logits is not None and logits.grad is not None:
            gradient = logits.grad.float() * (len(index) / loss_scale)
            self.table.write(index, {"logits": logits.detach().float(), "grad": gradient})

    def merge(self, processes: Processes) -> None:
        self.table.merge(processes)

    def per_sample(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        columns = self.table.columns()
        return logit_gradient_stats(columns["logits"], columns["grad"], labels) if "grad" in columns else {}


class ColumnTable:
    """Values written a batch (or a step) at a time, gathered into device tensors [rows, ...] when read.

    A write only keeps references to the step's tensors (detached); reading (or every `GATHER_EVERY`
    writes, or once `GATHER_ELEMENTS` values wait) concatenates each key's values and puts them into
    their rows in one indexed write. So a step costs no tensor operation here, and no host sync.
    Rows never written stay NaN. A written tensor must not be changed in place afterwards (methods
    hand over fresh tensors every step).
    """

    GATHER_EVERY = 256  # writes kept before they are gathered: bounds the number of small tensors held
    GATHER_ELEMENTS = 1 << 22  # and the memory they hold (16 MiB of float32), e.g. [B, 1000] logits

    def __init__(self, rows: int, device: torch.device) -> None:
        self.rows, self.device = rows, device
        self._tables: dict[str, torch.Tensor] = {}
        self._pending: list[tuple[int | torch.Tensor, dict[str, torch.Tensor]]] = []  # writes not yet in the tables
        self._waiting = 0  # values they hold

    def write(self, where: int | torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        """Keep a step's values for their rows (`where`: a row number, or the batch's dataset indices;
        a single value for a batch is given to each of its rows)."""
        per_row, elements = not isinstance(where, int), 0
        for value in values.values():
            if value.requires_grad or (per_row and value.dim() == 0):
                values = {key: self._kept(value, where) for key, value in values.items()}
                break
            elements += value.numel()
        else:
            self._pending.append((where, values))
            self._waiting += elements
            if len(self._pending) >= self.GATHER_EVERY or self._waiting > self.GATHER_ELEMENTS:
                self._gather()
            return
        self.write(where, values)

    @staticmethod
    def _kept(value: torch.Tensor, where: int | torch.Tensor) -> torch.Tensor:
        value = value.detach()  # no autograd graph outlives its step
        if not isinstance(where, int) and value.dim() == 0:
            value = value.expand(where.shape[0])
        return value

    def _gather(self) -> None:
        by_key: dict[str, tuple[list, list]] = {}
        for where, values in self._pending:
            for key, value in values.items():
                wheres, kept = by_key.setdefault(key, ([], []))
                wheres.append(where)
                kept.append(value)
        for key, (wheres, values) in by_key.items():
            if isinstance(wheres[0], int):  # one row per write: a step's scalars
                stacked = torch.stack(values).float()
                index = _rows(wheres, self.device)
            else:
                stacked = torch.cat(values).float()
                index = torch.cat(wheres)
            if key not in self._tables:
                self._tables[key] = torch.full((self.rows, *stacked.shape[1:]), float("nan"), device=self.device)
            self._tables[key][index] = stacked
        self._pending.clear()
        self._waiting = 0

    def merge(self, processes: Processes) -> None:
        """Every process's rows in every process's table (its own samples were written by each)."""
        self._gather()
        for table in self._tables.values():
            processes.merge_rows(table)

    def column(self, key: str) -> torch.Tensor:
        """The key's [rows] (or [rows, ...]) values; all NaN where nothing was written (yet)."""
        self._gather()
        if key not in self._tables:
            return torch.full((self.rows,), float("nan"), device=self.device)
        return self._tables[key]

    def columns(self) -> dict[str, torch.Tensor]:
        self._gather()
        return dict(self._tables)


def _rows(numbers: list[int], device: torch.device) -> slice | torch.Tensor:
    """Row numbers as a slice when they follow each other (no index tensor to copy to the device)."""
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return slice(numbers[0], numbers[0] + len(numbers))
    return torch.tensor(numbers, device=device)


def epoch_record(config, data, student, distiller, per_sample, autocast, device, epoch, route_probe):
    """The epoch's scalars (coefficients, evaluation) and per-sample arrays."""
    scalars = distiller.coefficients()
    arrays_from_method = distiller.epoch_arrays()
    arrays = {}
    if config.probes.per_sample:
        arrays = {f"train.{k}": v.cpu().numpy() for k, v in per_sample.items()}
        arrays["train.label"] = data.train.targets.cpu().numpy()
    with_probs = config.probes.probs_every and (
        (epoch + 1) % config.probes.probs_every == 0 or epoch + 1 == config.epochs
    )
    splits = [getattr(data, split_name) for split_name in config.probes.eval_splits]
    predicted = predict_splits(student, splits, config.batch_size, device, autocast)
    for split_name, split, logits in zip(config.probes.eval_splits, splits, predicted, strict=True):
        split_scalars, split_arrays = evaluate(logits, split.targets, config.probes.ece_bins, bool(with_probs))
        scalars |= {f"{split_name}.{k}": v for k, v in split_scalars.items()}
        if config.probes.per_sample and split_name != "train":
            split_arrays["label"] = split.targets.cpu().numpy()
            arrays |= {f"{split_name}.{k}": v for k, v in split_arrays.items()}
    arrays |= arrays_from_method
    if route_probe is not None:
        route_scalars, arrays["probe.probs"] = route_probe.measure(student)
        scalars |= route_scalars
    return scalars, arrays


def logged_loss(losses, shard_sizes, first: int, last: int, processes: Processes, epoch: int,
                 steps_per_epoch: int, config: RunConfig) -> float:
    """The mean loss per sample of steps first..last over all processes; raises at a NaN or infinite loss.

    One host sync. A NaN or infinite loss in any process makes the summed loss non-finite in every
    process, so all stop at the same step.
    """
    sizes = shard_sizes[first : last + 1]
    window = torch.where(sizes > 0, losses[first : last + 1], 0.0)  # a step with no samples here wrote NaN
    loss_sum, count = processes.sum(torch.stack([(window * sizes).sum(), sizes.sum()])).tolist()
    if not math.isfinite(loss_sum):
        _check_finite(window, first, epoch, steps_per_epoch, config)
        raise NonFiniteLoss(f"the loss became NaN or infinite in another process in epoch {epoch}")
    return loss_sum / max(count, 1.0)


def _check_finite(losses: torch.Tensor, first: int, epoch: int, steps_per_epoch: int, config: RunConfig) -> None:
    """Raise with the first step whose loss is NaN or infinite (`losses` of steps first, first + 1, ...)."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad) == 0:
        return
    hints = [f"lower optimizer.lr (now {config.optimizer.lr})"]
    if "temperature" in type(config.method).model_fields:
        hints.append("check method.temperature (a very small T makes the soft term explode)")
    if config.grad_clip is None:
        hints.append("set grad_clip (e.g. 5.0)")
    first += int(bad[0])
    raise NonFiniteLoss(
        f"the loss became NaN or infinite at step {epoch * steps_per_epoch + first} (epoch {epoch}, step "
        f"{first} of {steps_per_epoch}); " + "; ".join(hints)
    )
