"""The gradient-rescaling probe: what reading d loss_i / d z_i costs, the two ways the engine could get it.

The engine owns the probe for every method. Two ways were open:
- read it per step from the backward pass the step takes anyway (`retain_grad` on the student's logits,
  the gradient kept by reference: `kdlib.recording.GradientProbe`, what the engine does);
- keep the logits and get it at the epoch's end in one batched call, `torch.func.vmap(torch.func.grad(...))`
  over the method's per-sample loss. That only works for a loss that is a pure function of the step's
  logits, labels and teacher logits, which PS-KD (its buffer changes), ProKT (its teacher moves) and
  LSSKD (its heads) are not; timed here for KD, where it would apply.

On the mnist1d setting of `bench/overhead.py` (MLP-128 student, batch 128, 10 classes, KD), one process:
a KD step (student forward, loss, backward, Adam) without the probe and with the per-step probe, taking
turns (medians over the rounds), and the epoch-end vmap over the epoch's [N, 10] logits. The probe's
statistics from the gradients (`logit_gradient_stats`) are the same work either way and not timed.

    .venv/bin/python bench/probe.py [--rounds 15] [--steps 33]     (--quick: 2 rounds of 3 steps, a check)

Last lines: `probe_step_extra_us`, `probe_epoch_ms_per_step_read`, `probe_epoch_ms_vmap`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import grad, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import parse_args  # noqa: E402

from kdlib.methods.kd import kd_step  # noqa: E402
from kdlib.recording import GradientProbe  # noqa: E402

N_TRAIN, BATCH, FEATURES, CLASSES = 4200, 128, 40, 10
TEMPERATURE, W_CE, W_KD = 4.0, 0.1, 0.9


def epoch_of_steps(student, optimizer, x, y, teacher_logits, steps: int, probe: GradientProbe | None) -> float:
    """Seconds for `steps` KD steps, each reading the probe when one is given."""
    start = time.perf_counter()
    for step in range(steps):
        rows = torch.arange(step * BATCH, (step + 1) * BATCH) % N_TRAIN
        logits = student(x[rows])
        out = kd_step(logits, teacher_logits[rows], y[rows], TEMPERATURE, W_CE, W_KD)
        watched = probe.watch(logits) if probe is not None else None
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if probe is not None:
            probe.read(watched, rows, 1.0)
        optimizer.step()
    return time.perf_counter() - start


def kd_sample_loss(logits, teacher_logits, label):
    """One sample's KD loss, for vmap: the same maths as `kd_step` on a batch of one."""
    out = kd_step(logits[None], teacher_logits[None], label[None], TEMPERATURE, W_CE, W_KD)
    return out.loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=33, help="steps per timed stretch (33: one mnist1d epoch)")
    args = parse_args(parser, {"rounds": 2, "steps": 3})
    torch.manual_seed(0)
    x, y = torch.randn(N_TRAIN, FEATURES), torch.randint(0, CLASSES, (N_TRAIN,))
    teacher_logits = torch.randn(N_TRAIN, CLASSES)
    student = torch.nn.Sequential(torch.nn.Linear(FEATURES, 128), torch.nn.ReLU(), torch.nn.Linear(128, CLASSES))
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    ratios, plain_times, probe_times, vmap_times = [], [], [], []
    per_sample_gradient = vmap(grad(kd_sample_loss))
    epoch_of_steps(student, optimizer, x, y, teacher_logits, 2, GradientProbe(N_TRAIN, torch.device("cpu")))  # warm-up
    per_sample_gradient(student(x).detach(), teacher_logits, y)
    for _ in range(args.rounds):
        plain = epoch_of_steps(student, optimizer, x, y, teacher_logits, args.steps, None)
        probe = GradientProbe(N_TRAIN, torch.device("cpu"))
        probed = epoch_of_steps(student, optimizer, x, y, teacher_logits, args.steps, probe)
        with torch.no_grad():
            logits = student(x)
        start = time.perf_counter()
        per_sample_gradient(logits, teacher_logits, y)
        vmap_times.append(time.perf_counter() - start)
        plain_times.append(plain)
        probe_times.append(probed)
        ratios.append(probed / plain)
    plain, probed = statistics.median(plain_times), statistics.median(probe_times)
    extra_us = (probed - plain) / args.steps * 1e6
    print(f"KD steps: {plain / args.steps * 1e6:.0f} us without the probe, {probed / args.steps * 1e6:.0f} us "
          f"with it (ratio {statistics.median(ratios):.3f}, median of {args.rounds} rounds)")
    print(f"probe_step_extra_us {extra_us:.1f}")
    print(f"probe_epoch_ms_per_step_read {extra_us * N_TRAIN / BATCH / 1e3:.2f}")
    print(f"probe_epoch_ms_vmap {statistics.median(vmap_times) * 1e3:.2f}")


if __name__ == "__main__":
    main()
