"""Data-parallel training across processes: `torchrun --nproc-per-node N -m kdlib run CONFIG`.

Every process holds the whole student and trains it on its share of each global batch: the
batches are drawn exactly as in one process (same seed per epoch, same `batch_size`), and process
r takes rows r, r + N, r + 2N, ... of each. After the backward pass the gradients of every
trainable parameter (the student's and a method's own heads or adapters) are summed across
processes in one bucketed all-reduce, each weighted by its process's share of the global batch
(n_r / n), so the update is the one a single process makes on the whole batch, last and uneven
batches included, and no sample is padded or seen twice. That is DistributedDataParallel's
arithmetic without its overlap of the all-reduce with the backward pass: DDP's hooks assume one
forward of the wrapped module per backward, and kdlib's methods run the student twice (UDA),
read features through hooks (DFA, LSSKD) or train parameters of their own.

Only the first process (rank 0) writes to the store and saves checkpoints; per-sample values are
merged to it by dataset index at the end of each epoch; pause and stop, read by rank 0, are
broadcast to every process at the same logged step. Checkpoints hold the plain student, so a run
resumes on any number of processes. NCCL on GPUs (one per process, by LOCAL_RANK), gloo on CPU.
Several nodes need the kdlib home on a shared file system (every process reads the teacher and
the checkpoint from it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Processes:
    """Where this process stands among those training one run; `SINGLE` when it is alone."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard_size(self, global_size: int) -> int:
        return len(range(self.rank, global_size, self.world))

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process on a node."""
        if self.active and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    # --- collectives (no-ops in one process) ---------------------------------------------

    def sum(self, tensor: Tensor) -> Tensor:
        if self.active:
            torch_dist.all_reduce(tensor)
        return tensor

    def broadcast(self, tensor: Tensor) -> Tensor:
        if self.active:
            torch_dist.broadcast(tensor, 0)
        return tensor

    def broadcast_object(self, value):
        if not self.active:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, 0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Rank 0's parameters and buffers (BatchNorm statistics) to every process."""
        if self.active:
            for tensor in [*([] if buffers_only else module.parameters()), *module.buffers()]:
                torch_dist.broadcast(tensor.data, 0)

    def merge_rows(self, values: Tensor, written: Tensor | None = None) -> Tensor:
        """Rows each process wrote for its own samples, gathered into every process's copy (in place).

        `written` marks the rows (or elements) this process wrote; by default the non-NaN values.
        A row no process wrote keeps its value (NaN for a per-sample table).
        """
        if not self.active:
            return values
        if written is None:
            written = ~torch.isnan(values)
        mask = written.reshape(written.shape + (1,) * (values.dim() - written.dim())).expand_as(values)
        total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).float()
        count = mask.float()
        torch_dist.all_reduce(total)
        torch_dist.all_reduce(count)
        values.copy_(torch.where(count > 0, total / count.clamp_min(1), values.float()).to(values.dtype))
        return values

    def share_gradients(self, parameters: list[nn.Parameter], batch_share: float) -> None:
        """Sum of each process's gradients weighted by its share of the global batch, in one bucketed call."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1).float() for g in grads]) * batch_share
        torch_dist.all_reduce(flat)
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).to(grad.dtype)
            offset += grad.numel()


SINGLE = Processes()


def from_environment() -> Processes:
    """The process group torchrun set up (WORLD_SIZE > 1), joined now; `SINGLE` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # a paused run keeps the other processes waiting in a collective: allow a long pause
        torch_dist.init_process_group(backend, timeout=timedelta(hours=24))
    return Processes(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(finished: bool = False) -> None:
    """Leave the process group. After a run this process finished, wait for the others first: a process
    that leaves while another still talks to it can abort at exit (gloo: "terminate called without an
    active exception"). The wait is bounded, so a process whose peer died still ends."""
    if not torch_dist.is_initialized():
        return
    if finished:
        try:
            if torch_dist.get_backend() == "gloo":
                torch_dist.monitored_barrier(timeout=timedelta(seconds=120))
            else:
                torch_dist.barrier()
        except RuntimeError:
            pass  # a peer gone or late: leave anyway
    torch_dist.destroy_process_group()
