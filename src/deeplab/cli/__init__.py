"""The ``deeplab`` command. Each subcommand lives in its own module with ``add_parser`` and ``run``;
user mistakes (bad files, bad values) print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .. import __version__
from . import check_data, convert, demo, eval, export, models, predict, train

SUBCOMMANDS = (demo, models, check_data, train, eval, predict, export, convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deeplab", description="DeepLabV3 / DeepLabV3+ semantic segmentation")
    parser.add_argument("--version", action="version", version=f"deeplab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `deeplab models | head`: stop quietly, like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError, ImportError) as error:  # user mistakes (and missing optional extras): one line, no traceback
        print(f"deeplab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
