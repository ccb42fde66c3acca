"""``deeplab eval``: mIoU, per-class IoU, pixel and mean class accuracy of a model on a labelled dataset.

    deeplab eval -w model.pt --dataset camvid --root data/camvid --split val [--output-stride 8]
                 [--scales paper --flip] [--input-size 257] [--crf] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from .common import (add_label_arguments, add_model_arguments, build_predictor, crf_postprocess, positive_int,
                     resolve_device, uses_crf)


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--dataset", required=required, choices=("voc", "camvid", "cityscapes", "folder"))
    parser.add_argument("--root", help="dataset root folder")
    parser.add_argument("--split", help="split name or split-list file (e.g. val, val_dev.txt)")
    parser.add_argument("--images", help="folder dataset: images folder")
    parser.add_argument("--masks", help="folder dataset: masks folder")
    parser.add_argument("--classes", help="folder dataset: comma-separated class names")
    add_label_arguments(parser)
    parser.add_argument("--groups", help="only these groups (comma-separated; e.g. a held-out CamVid drive 0006R0)")
    parser.add_argument("--group-pattern", help="regex whose first group is an image's group (default: the dataset's)")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N images only")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("eval", help="evaluate a model on a labelled dataset")
    add_data_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--input-size", type=positive_int, default=None,
                        help="resize every image to NxN (a fixed-input deployment protocol, e.g. 257)")
    parser.add_argument("--json", help="write the per-class results as JSON here")
    parser.add_argument("--confusion-png", help="write the confusion matrix image here")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run)


def load_dataset(args: argparse.Namespace):
    from ..data.datasets import build_dataset

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    dataset = build_dataset(args.dataset, root=args.root, split=args.split, images_dir=args.images,
                            masks_dir=args.masks, classes=classes, ignore_index=args.ignore_index,
                            label_map=args.label_map)
    if args.groups:
        from ..data.groups import select_groups

        dataset = select_groups(dataset, [g.strip() for g in args.groups.split(",") if g.strip()], args.group_pattern)
    return dataset


def run(args: argparse.Namespace) -> int:
    from ..inference.evaluation import evaluate
    from ..utils.files import atomic_write_bytes

    resolve_device(args.device)  # a bad --device is reported before any data is read
    dataset = load_dataset(args)
    predictor, loaded, inference_path = build_predictor(args, sample=lambda: dataset.read(0)[0])
    result = evaluate(predictor, dataset, input_size=args.input_size, postprocess=crf_postprocess(args),
                      limit=args.limit, progress=not args.no_progress)
    names = dataset.info.classes
    print(result.matrix.table(names))
    protocol = f"{args.input_size}x{args.input_size} resize" if args.input_size else "native resolution"
    print(f"{args.weights} on {dataset.info.name} ({result.images} images, {protocol}, scales {list(args.scales)}"
          f"{', flip' if args.flip else ''}{', CRF' if uses_crf(args) else ''}, {inference_path.name}): "
          f"mIoU {100 * result.matrix.miou:.2f} %, {result.seconds:.1f} s ({1000 * result.median_seconds:.0f} ms/image "
          "median)")
    if args.json:
        summary = {"weights": str(args.weights), "dataset": dataset.info.name, "images": result.images,
                   "protocol": protocol, "scales": list(args.scales), "flip": args.flip, "crf": uses_crf(args), "crf_params": args.crf_params,
                   "output_stride": args.output_stride, "seconds": result.seconds,
                   "backend": inference_path.backend, "precision": inference_path.precision,
                   **result.matrix.summary(names)}
        atomic_write_bytes(args.json, json.dumps(summary, indent=2).encode())
    if args.confusion_png:
        from ..visualize import plot_confusion_matrix

        plot_confusion_matrix(result.matrix.matrix.numpy(), names, args.confusion_png)
    return 0
