"""One training step (``train_one_step``: forward, loss over the whole step's labelled pixels, backward over
accumulated micro-batches, optimiser and schedule step), the divergence check, and the wall-clock budget.

The loop around it — data, resume, validation, checkpoints — is ``runner.py``; the evaluation it runs is
``deeplab.inference.evaluate``, the same loop as ``deeplab eval``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..losses import SegmentationLoss
from ..utils.distributed import DistInfo, all_reduce_sum
from ..utils.machine import has_fast_bf16


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf: the run stops with step, loss and lr; the last good checkpoint is kept."""


@dataclass
class StepResult:
    loss: float
    lr: float
    images: int


def step_normaliser(loss_fn: SegmentationLoss, labels: Sequence[Tensor], info: DistInfo) -> Tensor:
    """The loss denominator that makes one step the mean over every labelled pixel of the global batch.

    DDP averages gradients over ranks, so each rank divides by the global normaliser / world size; micro-batches
    of gradient accumulation share it. Then 2 ranks × 1 image, 1 rank × 2 micro-batches and 1 × 2 images give
    the same gradient even when the crops hold different numbers of ignore pixels."""
    local = torch.stack([loss_fn.normaliser(label) for label in labels]).sum().double()
    return (all_reduce_sum(local, info) / info.world_size).float()


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: torch.device, fast_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype of a ``train.precision`` on ``device`` (None: plain fp32). bf16 needs no loss scaling;
    fp16 (CUDA) does, so it comes with a GradScaler. On a CPU without bf16 matrix instructions (``fast_bf16``,
    detected when None) bf16 means fp32: oneDNN would emulate bf16, and a training step of the CamVid recipe
    took 12x as long as in fp32 — a config written for a bf16 CPU stays usable on the others
    (``bf16_fallback`` says so in the log)."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs CUDA; on the CPU use bf16 (or fp32)")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if bf16_fallback(precision, device, fast_bf16):
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def bf16_fallback(precision: str, device: torch.device, fast_bf16: bool | None = None) -> str | None:
    """The log line for a bf16 run that trains in fp32 because the CPU would only emulate bf16; None otherwise."""
    if precision != "bf16" or device.type != "cpu" or (has_fast_bf16() if fast_bf16 is None else fast_bf16):
        return None
    return ("train.precision=bf16: this CPU has no bf16 matrix instructions (AVX512-BF16 or AMX) and would emulate "
            "bf16 at ~1/12 the fp32 speed; training in fp32")


def train_one_step(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], loss_fn: SegmentationLoss,
                   optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler | None,
                   device: torch.device, *, iteration: int, autocast: torch.dtype | None = None,
                   channels_last: bool = False, info: DistInfo = DistInfo()) -> StepResult:
    """One optimiser step over ``len(batches)`` accumulated micro-batches, under ``autocast`` (a dtype, or None
    for fp32), with channels-last inputs if asked. ``iteration``: steps done before this one (messages count
    steps from 1, as metrics.csv and checkpoint names do). Under DDP every rank must call it (the loss
    normaliser is summed across ranks)."""
    optimizer.zero_grad(set_to_none=True)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batches = [(image.to(device, non_blocking=True).contiguous(memory_format=memory_format),
                label.to(device, non_blocking=True)) for image, label in batches]
    denominator = step_normaliser(loss_fn, [label for _, label in batches], info)
    total, images = 0.0, 0
    for micro, (image, label) in enumerate(batches):
        sync = contextlib.nullcontext()
        if isinstance(model, DistributedDataParallel) and micro < len(batches) - 1:
            sync = model.no_sync()  # all-reduce gradients once per step, not per micro-batch
        with sync, torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = loss_fn(model(image), label, denominator)
        if not torch.isfinite(loss):
            lr = optimizer.param_groups[0]["lr"]
            raise TrainingDiverged(f"loss is {loss.item()} at step {iteration + 1} (lr {lr:.3g}); stopping without "
                                   "overwriting the last good checkpoint — lower train.lr or check the data")
        with sync:
            (scaler.scale(loss) if scaler else loss).backward()
        total += loss.item()
        images += image.shape[0]
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    scheduler.step()
    return StepResult(total, lr, images)


class Stopwatch:
    """Wall-clock budget for ``train.time_budget_minutes`` (resumed runs count their earlier time)."""

    def __init__(self, budget_minutes: float | None, already_spent: float = 0.0) -> None:
        self.start = time.monotonic() - already_spent
        self.budget = None if budget_minutes is None else budget_minutes * 60

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return self.budget is not None and self.elapsed >= self.budget


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model
