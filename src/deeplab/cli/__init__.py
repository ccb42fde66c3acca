"""The ``deeplab`` command. Each subcommand lives in its own module with ``add_parser`` and ``run``;
user mistakes (bad files, bad values) print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .. import __version__
from . import benchmark, check_data, convert, convert_coco, demo, eval, export, models, predict, serve, train

SUBCOMMANDS = (demo, models, check_data, train, eval, predict, export, convert, convert_coco, serve, benchmark)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line like every other user mistake, with where to look."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="deeplab", description="DeepLabV3 / DeepLabV3+ semantic segmentation")
    parser.add_argument("--version", action="version", version=f"deeplab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def one_line(error: BaseException) -> str:
    """An error as the one line a user reads. An error raised in a DataLoader worker arrives with the worker's
    traceback in its message: its last line is the original error."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help, --version, or a bad option already printed
        return exit.code if isinstance(exit.code, int) else 2
    try:
        return args.run(args)
    except BrokenPipeError:  # `deeplab models | head`: stop quietly, like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError, ImportError) as error:  # user mistakes (and missing optional extras): one line, no traceback
        print(f"deeplab {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
