"""``deeplab demo``: the authors' own DeepLabV3 on real photos, in under a minute on a laptop CPU.

Imports the TF model-zoo TFLite file (MobileNetV2 ×0.5, trained on COCO + VOC) into our PyTorch model,
segments the PASCAL VOC 2012 val images of the data folder at their native resolution, prints the mIoU
against their labels, and writes photo | ground truth | prediction panels to the output folder.

    deeplab demo --data ../shared/data --output demo_output
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import positive_int

TFLITE_NAME = "deeplabv3_257_mv_gpu.tflite"
VOC_DEV = "voc2012_val_dev"
WHERE_TO_GET = {
    TFLITE_NAME: "the TF model zoo's DeepLabV3 MobileNetV2 (dm 0.5, COCO + VOC trainaug) TFLite export, "
                 "sha256 68a53978...c933c6",
    VOC_DEV: "PASCAL VOC 2012 val images: JPEGImages/<id>.jpg, SegmentationClass/<id>.png and a val_dev.txt list",
}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="segment VOC photos with the authors' DeepLabV3 and report mIoU")
    parser.add_argument("--data", required=True, type=Path,
                        help=f"folder holding weights/{TFLITE_NAME} and {VOC_DEV}/ (e.g. ../shared/data)")
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="where panels go (default demo_output)")
    parser.add_argument("--limit", type=positive_int, default=None, help="first N images only")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run)


def required_files(data: Path) -> dict[str, Path]:
    return {TFLITE_NAME: data / "weights" / TFLITE_NAME, VOC_DEV: data / VOC_DEV}


def run(args: argparse.Namespace) -> int:
    missing = [(name, path) for name, path in required_files(args.data).items() if not path.exists()]
    if missing:
        name, path = missing[0]
        raise FileNotFoundError(f"{path} is missing: put {WHERE_TO_GET[name]} there "
                                f"(or point --data at the folder that has it)")
    from ..data.datasets import voc_dataset
    from ..inference.evaluation import evaluate
    from ..inference.loading import load_any
    from ..inference.predictor import Predictor
    from ..utils.files import ensure_writable_dir
    from ..visualize import colorize, overlay, save_jpeg, side_by_side

    began = time.perf_counter()
    paths = required_files(args.data)
    loaded = load_any(paths[TFLITE_NAME])
    model, card = loaded.model, loaded.card
    predictor = Predictor.from_loaded(loaded, return_probabilities=False)
    dataset = voc_dataset(paths[VOC_DEV], "val_dev.txt")
    palette = dataset.info.palette
    ensure_writable_dir(args.output)  # the demo's own folder: a re-run replaces its panels

    def write_panel(sample, labels) -> None:
        truth = colorize(sample.label, palette)
        panel = side_by_side(sample.image, truth, overlay(sample.image, labels, palette, alpha=0.6))
        save_jpeg(panel, args.output / f"{sample.image_path.stem}.jpg")

    print(f"imported {paths[TFLITE_NAME].name}: DeepLabV3, MobileNetV2 x{model.config['width_mult']}, output "
          f"stride {model.output_stride}, ASPP rates {list(model.aspp_rates)} (mobile ASPP), "
          f"{card.num_classes} VOC classes")
    result = evaluate(predictor, dataset, limit=args.limit, progress=not args.no_progress, on_prediction=write_panel)
    print(result.matrix.table(dataset.info.classes))
    print(f"mIoU {100 * result.matrix.miou:.2f} % on {result.images} VOC 2012 val images at native resolution "
          f"(the same file at its fixed 257x257 input: 52.9 %; the authors report 70.19 % on the full val set)")
    print(f"panels (photo | ground truth | prediction) in {args.output}/ — {time.perf_counter() - began:.0f} s")
    return 0
