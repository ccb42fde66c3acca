"""``deeplab check-data``: scan a whole dataset once and list every bad file (the same scan runs before training).

    deeplab check-data --dataset camvid --root ../shared/data/camvid --split train
    deeplab check-data --dataset voc --root ../shared/data/voc2012_val_dev --split val_dev.txt
    deeplab check-data --dataset folder --images imgs/ --masks masks/ --classes background,road [--split list.txt]
        [--skip-bad] [--json report.json]

Exit status: 0 when the data is fine (or, with --skip-bad, when good samples remain), 1 when problems were
found, 2 for usage and layout errors (a missing folder, unmatched names: one line, before any reading).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import add_label_arguments


def add_parser(commands: argparse._SubParsersAction) -> None:
    from ..data.datasets import DATASETS

    parser = commands.add_parser("check-data", help="scan a dataset for bad files; class histogram and weights")
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--root", help="dataset root folder (camvid, voc, cityscapes)")
    parser.add_argument("--split", help="split name (camvid/cityscapes: train|val|test; voc: train|val|trainaug) "
                                        "or a list file of ids (voc, folder)")
    parser.add_argument("--images", help="folder of images (folder dataset)")
    parser.add_argument("--masks", help="folder of masks, matched to images by file stem (folder dataset)")
    parser.add_argument("--classes", help="comma-separated class names (folder dataset)")
    add_label_arguments(parser)
    parser.add_argument("--skip-bad", action="store_true", help="report bad samples and go on without them")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.checks import scan_dataset
    from ..data.datasets import build_dataset

    if args.json:
        _check_writable(Path(args.json))  # fail before a long scan, not after it
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    dataset = build_dataset(args.dataset, root=args.root, split=args.split, images_dir=args.images,
                            masks_dir=args.masks, classes=classes, ignore_index=args.ignore_index,
                            label_map=args.label_map)
    report = scan_dataset(dataset, skip_bad=args.skip_bad, progress=not args.no_progress and sys.stderr.isatty())
    print(report.format())
    if args.json:
        report.write_json(args.json)
    return 0 if report.usable else 1


def _check_writable(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ValueError(f"{path}: cannot write the JSON report ({existing} is not a writable folder)")
