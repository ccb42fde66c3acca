"""``deeplab models``: every model with its parameter count and GFLOPs at each output stride.

    deeplab models [--size 513] [--num-classes 21] [--format table|csv]
"""

from __future__ import annotations

import argparse

from ..models.backbones.base import VALID_OUTPUT_STRIDES
from .common import positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="list every model with parameters and GFLOPs")
    parser.add_argument("--size", type=positive_int, default=513, help="square input size (default 513)")
    parser.add_argument("--num-classes", type=positive_int, default=21, help="classes (default 21, VOC)")
    parser.add_argument("--format", choices=("table", "csv"), default="table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models.complexity import measure
    from ..models.registry import BUILDERS, list_models

    rows = []
    variants = [(name, {}) for name in list_models()]
    variants += [(f"{arch}_mobilenet_v2", {"width_mult": 0.5}) for arch in ("deeplabv3", "deeplabv3plus")]
    variants.sort(key=lambda v: list_models().index(v[0]))
    for name, extra in variants:
        arch, backbone = name.split("_", 1)
        label = name + ("" if not extra else f" (width {extra['width_mult']})")
        costs = [_measure(measure, BUILDERS[arch], args.size, backbone=backbone, output_stride=os,
                          num_classes=args.num_classes, **extra) for os in VALID_OUTPUT_STRIDES]
        parameters = next(c.parameters for c in costs if c is not None)
        rows.append([label, f"{parameters:,}", *("n/a" if c is None else f"{c.gflops:.2f}" for c in costs)])
    header = ["model", "parameters", *(f"GFLOPs OS{os}" for os in VALID_OUTPUT_STRIDES)]
    print(f"{args.num_classes} classes, input {args.size}x{args.size}; GFLOPs = multiply-adds x 1e-9 "
          "(torchvision's convention); atrous rates derived from the output stride (n/a: no whole-number rates)")
    print(_format_table(header, rows, args.format))
    return 0


def _measure(measure, build, size: int, **kwargs):
    """The model's cost, or None where its rates have no whole-number equivalent at that output stride."""
    try:
        return measure(build, size, size, **kwargs)
    except ValueError:
        return None


def _format_table(header: list[str], rows: list[list[str]], style: str) -> str:
    if style == "csv":
        return "\n".join(",".join(f'"{c}"' if "," in c else c for c in line) for line in [header, *rows])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                         for i, (c, w) in enumerate(zip(line, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), rule, *map(fmt, rows)])
