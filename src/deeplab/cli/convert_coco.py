"""``deeplab convert-coco``: COCO instance annotations → VOC label PNGs, written once, to train on as a folder.

    deeplab convert-coco --images coco/train2017 --annotations coco/annotations/instances_train2017.json \
        --output coco_voc/train [--min-pixels 1000]

Writes ``<output>/<stem>.png`` (palette PNGs whose pixel values are VOC's 21 class indices, 255 = ignore) and
``<output>/train.txt`` listing the kept images. Train on them with the folder dataset (``data.dataset: folder``,
``data.images`` the COCO images, ``data.masks`` the output, ``data.train_split`` the list;
``configs/coco_voc_resnet101_os16.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("convert-coco", help="COCO instances → VOC-class label PNGs (pre-training data)")
    parser.add_argument("--images", type=Path, required=True, help="folder of the COCO images")
    parser.add_argument("--annotations", type=Path, required=True, help="instances_*.json")
    parser.add_argument("--output", type=Path, required=True, help="folder for the label PNGs and the list")
    parser.add_argument("--split-name", default="train", help="name of the list file (default train → train.txt)")
    parser.add_argument("--min-pixels", type=positive_int, default=1000,
                        help="drop images with fewer labelled object pixels (default 1000, the paper's)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.coco import coco_voc_dataset, write_coco_labels
    from ..utils.files import ensure_writable_dir

    if not args.images.is_dir():
        raise FileNotFoundError(f"{args.images}: no such folder of COCO images")
    ensure_writable_dir(args.output)
    dataset = coco_voc_dataset(args.images, args.annotations, min_object_pixels=args.min_pixels,
                               progress=not args.no_progress)
    total = len(dataset.coco.getImgIds())
    stems = write_coco_labels(dataset, args.output, split_name=args.split_name, progress=not args.no_progress)
    print(f"{len(stems)} of {total} images kept (>= {args.min_pixels} labelled VOC-class pixels); label PNGs and "
          f"{args.split_name}.txt in {args.output}")
    return 0
