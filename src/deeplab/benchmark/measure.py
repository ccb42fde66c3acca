"""Timing, FLOPs and agreement of inference paths on one input.

Paths are timed round-robin: after ``warmup`` calls of each, every round calls each path twice in a row and
times the second call, so a change in machine load during the run affects all of them alike, and each timed
call sees the machine as a loop of that path alone does. The first call of a pair absorbs the switch: the
runtimes' worker threads (ONNX Runtime's, OpenVINO's) spin on after their work is done and steal the cores
from whichever path runs next. Measured on the authors' model (513², 2 threads, a Xeon with AMX), compiled
torch fp32 alone 30.5 ms, right after ONNX Runtime 55–62 ms, after a 50 ms sleep following the other paths
40.3 ms (the sleep let the neighbours idle but cooled its own threads and caches), second of a pair 30.1 ms.
Median, min and max over the rounds."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

Runner = Callable[[Tensor], Tensor]


@dataclass
class Measured:
    name: str
    precision: str
    seconds: list[float] = field(default_factory=list)
    rss_mb: float = 0.0          # resident memory of the process after this path was built and warmed up
    agreement: float = float("nan")  # share of pixels whose label equals fp32 eager's
    max_abs_diff: float = float("nan")  # of the logits, against fp32 eager

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def count_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), by torch's flop counter."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def resident_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_round_robin(runners: dict[str, Runner], x: Tensor, *, warmup: int, repeats: int,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each runner, ``repeats`` rounds after ``warmup``: in each round every runner is
    called once untimed (taking the cores over from the previous one), then once timed."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runners.values():
                run(x)
        for round_index in range(repeats):
            for name, run in runners.items():
                run(x)
                began = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - began)
            if progress is not None:
                progress(round_index + 1, repeats)
    return times


def agreement(reference: Tensor, logits: Tensor) -> tuple[float, float]:
    """(share of equal argmax labels, max |Δ| of the logits)."""
    logits = logits.float()
    return (float((logits.argmax(1) == reference.argmax(1)).double().mean()),
            float((logits - reference).abs().max()))
