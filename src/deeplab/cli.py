"""The ``deeplab`` command. Each subcommand is a small function; user mistakes print one line, exit 2.

    deeplab models [--size 513] [--format table|csv]
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from . import __version__
from .models.backbones.base import VALID_OUTPUT_STRIDES


def cmd_models(args: argparse.Namespace) -> int:
    """Every model with its parameter count and GFLOPs at each output stride."""
    from .models.builders import BUILDERS, list_models
    from .models.complexity import measure

    rows = []
    variants = [(name, {}) for name in list_models()]
    variants += [(f"{arch}_mobilenet_v2", {"width_mult": 0.5}) for arch in BUILDERS]
    variants.sort(key=lambda v: list_models().index(v[0]))
    for name, extra in variants:
        arch, backbone = name.split("_", 1)
        label = name + ("" if not extra else f" (width {extra['width_mult']})")
        costs = [measure(BUILDERS[arch], args.size, args.size, backbone=backbone, output_stride=os,
                         num_classes=args.num_classes, **extra) for os in VALID_OUTPUT_STRIDES]
        rows.append([label, f"{costs[0].parameters:,}", *(f"{c.gflops:.2f}" for c in costs)])
    header = ["model", "parameters", *(f"GFLOPs OS{os}" for os in VALID_OUTPUT_STRIDES)]
    print(f"{args.num_classes} classes, input {args.size}x{args.size}; GFLOPs = multiply-adds x 1e-9 "
          "(torchvision's convention); ASPP rates derived from the output stride")
    print(_format_table(header, rows, args.format))
    return 0


def _format_table(header: list[str], rows: list[list[str]], style: str) -> str:
    if style == "csv":
        return "\n".join(",".join(f'"{c}"' if "," in c else c for c in line) for line in [header, *rows])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                         for i, (c, w) in enumerate(zip(line, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), rule, *map(fmt, rows)])


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deeplab", description="DeepLabV3 / DeepLabV3+ semantic segmentation")
    parser.add_argument("--version", action="version", version=f"deeplab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="list every model with parameters and GFLOPs")
    models.add_argument("--size", type=_positive_int, default=513, help="square input size (default 513)")
    models.add_argument("--num-classes", type=_positive_int, default=21, help="classes (default 21, VOC)")
    models.add_argument("--format", choices=("table", "csv"), default="table")
    models.set_defaults(run=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (ValueError, OSError) as error:  # user mistakes: one line, no traceback
        print(f"deeplab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
