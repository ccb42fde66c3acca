"""CPU inference speed of DeepLabV3 at 513×513: MobileNetV2 (×0.5, ×1.0) and ResNet-50, output stride 16
vs 8, and the effect of ``torch.inference_mode`` and the channels-last memory format.

Four variants per model and stride, all batch 1, 21 classes, random weights (speed does not depend on them):

- ``no_grad``            : ``torch.no_grad()``, contiguous (NCHW) model and input — the baseline;
- ``inference_mode``     : ``torch.inference_mode()``, NCHW;
- ``no_grad+CL``         : ``torch.no_grad()``, model and input in ``torch.channels_last``;
- ``inference_mode+CL``  : both.

Variants are timed round-robin (one forward of each in turn, ``--repeats`` rounds after ``--warmup``), so
drifting machine load affects them alike; the median is reported (images/s from it) and the minimum.
Ratios are against ``no_grad`` of the same model and stride, and OS16 against OS8 per variant. No
assertions: this prints what it measures. The machine is shared, so check the load averages it prints.

Run: ``.venv/bin/python benchmarks/inference_speed.py [--repeats 5] [--warmup 2] [--size 513] [--threads N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch

from deeplab.models import deeplabv3
from deeplab.utils.machine import cpu_name

MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "mobilenet_v2 x0.5": lambda: deeplabv3(backbone="mobilenet_v2", width_mult=0.5, num_classes=21),
    "mobilenet_v2 x1.0": lambda: deeplabv3(backbone="mobilenet_v2", width_mult=1.0, num_classes=21),
    "resnet50": lambda: deeplabv3(backbone="resnet50", num_classes=21),
}
VARIANTS = {  # name: (grad mode, channels_last)
    "no_grad": (torch.no_grad, False),
    "inference_mode": (torch.inference_mode, False),
    "no_grad+CL": (torch.no_grad, True),
    "inference_mode+CL": (torch.inference_mode, True),
}


def time_variants(build: Callable[[], torch.nn.Module], output_stride: int, size: int, warmup: int,
                  repeats: int) -> dict[str, list[float]]:
    """Seconds per forward for each variant, measured round-robin."""
    torch.manual_seed(0)
    base = build().eval()
    base.set_output_stride(output_stride)
    x = torch.randn(1, 3, size, size)
    runs = {}
    for name, (mode, channels_last) in VARIANTS.items():
        if channels_last:
            model = build().eval()
            model.load_state_dict(base.state_dict())
            model.set_output_stride(output_stride)
            model = model.to(memory_format=torch.channels_last)
            runs[name] = (mode, model, x.contiguous(memory_format=torch.channels_last))
        else:
            runs[name] = (mode, base, x)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_index in range(warmup + repeats):
        for name, (mode, model, inp) in runs.items():
            with mode():
                start = time.perf_counter()
                model(inp)
                elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}, "
          f"{os.cpu_count()} logical CPUs, load average at start {os.getloadavg()[0]:.2f}")
    print(f"input 1x3x{args.size}x{args.size}, 21 classes, median (and min) of {args.repeats} round-robin runs "
          f"after {args.warmup} warm-up rounds\n")
    header = f"| {'model':<17} | OS | {'variant':<17} | ms/image | min ms | images/s | vs no_grad | OS16 vs OS8 |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    results: dict[tuple[str, int, str], float] = {}
    fastest: dict[tuple[str, int, str], float] = {}
    for model_name in args.models:
        for output_stride in (16, 8):
            times = time_variants(MODELS[model_name], output_stride, args.size, args.warmup, args.repeats)
            for variant, values in times.items():
                results[(model_name, output_stride, variant)] = statistics.median(values)
                fastest[(model_name, output_stride, variant)] = min(values)
        for output_stride in (16, 8):
            baseline = results[(model_name, output_stride, "no_grad")]
            for variant in VARIANTS:
                seconds = results[(model_name, output_stride, variant)]
                os_ratio = (f"{results[(model_name, 8, variant)] / seconds:10.2f}x" if output_stride == 16
                            else f"{'':11}")
                print(f"| {model_name:<17} | {output_stride:>2} | {variant:<17} | {seconds * 1000:8.1f} | "
                      f"{fastest[(model_name, output_stride, variant)] * 1000:6.1f} | {1 / seconds:8.2f} | "
                      f"{baseline / seconds:9.2f}x | {os_ratio} |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; 'vs no_grad' > 1 means faster than the baseline; "
          "'OS16 vs OS8' is how many times faster OS16 is")


if __name__ == "__main__":
    main()
