"""``deeplab export``: a model file (or an untrained named model) as ONNX or TorchScript, then a parity check.

    deeplab export --weights model.safetensors --format onnx --output model.onnx [--opset 17]
                   [--include-preprocessing] [--output-kind labels|logits|probabilities] [--force]
    deeplab export --model deeplabv3_resnet50 --num-classes 21 --format torchscript --output bench.pt
    deeplab export --weights model.safetensors --format onnx --output int8.onnx --precision int8 \
                   --calibration photos/ [--int8-rule auto|vnni|overflow-safe]

An existing output is never replaced without ``--force``. After writing, the file is run against the eager
model at two sizes other than the trace size (batch 2); a mismatch exits 1. An int8 file is checked instead on
the calibration photos: labels differing from fp32 eager at more than ``INT8_LABELS_TOLERANCE`` of the pixels
exit 1.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models.backbones.base import ALL_OUTPUT_STRIDES
from .common import positive_int

if TYPE_CHECKING:
    from torch import nn

    from ..weights.card import ModelCard

# Largest accepted difference from eager: float logits/probabilities, and the fraction of differing labels
# (ties between two classes may break either way after float rounding).
LOGITS_TOLERANCE = 1e-3
LABELS_TOLERANCE = 1e-4
# int8 against fp32 eager on the calibration photos, measured (vnni / overflow-safe rule): the authors' model on 8
# VOC photos 0.30 / 0.54 % of pixels, the held-out CamVid DeepLabV3+ on 8 training frames 0.95 / 1.33 %. The bound
# catches a broken file, not a fraction of a point of mIoU: `deeplab eval` on real labels measures that.
INT8_LABELS_TOLERANCE = 0.05


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a model to ONNX or TorchScript and check parity")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="a model file: deeplab .safetensors/.pt or checkpoint, "
                                                     "torchvision DeepLabV3 .pth, the authors' .tflite")
    source.add_argument("--model", help="an untrained named model (see `deeplab models`), e.g. for benchmarks")
    parser.add_argument("--num-classes", type=positive_int, default=21, help="classes of --model (default 21)")
    parser.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    parser.add_argument("--output", type=Path, required=True, help="file to write")
    parser.add_argument("--opset", type=positive_int, default=None,
                        help="ONNX opset (default 17; 18 with --exporter dynamo)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="ONNX exporter: TorchScript-based (default, fast) or torch.export-based")
    parser.add_argument("--include-preprocessing", action="store_true",
                        help="take uint8 N×3×H×W images and normalise inside the graph")
    parser.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW",
                        help="uint8 image layout with --include-preprocessing (default NCHW)")
    parser.add_argument("--output-kind", choices=("labels", "logits", "probabilities"), default=None,
                        help="graph output (default: labels with --include-preprocessing, else logits)")
    parser.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                        help="normalisation mean on x/255 (default: the model file's, ImageNet for --model)")
    parser.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation std (as --mean)")
    parser.add_argument("--output-stride", type=int, choices=ALL_OUTPUT_STRIDES, default=None,
                        help="export at this output stride (the ASPP rates follow)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="fp32 (default, exact) or int8 (ONNX only: static quantization on --calibration)")
    parser.add_argument("--calibration", type=Path, default=None, metavar="FOLDER",
                        help="int8: images like the ones to segment (the first 16 of the folder, or one file)")
    parser.add_argument("--int8-rule", choices=("auto", "vnni", "overflow-safe"), default="auto",
                        help="int8: vnni (8 bits everywhere; only for CPUs with VNNI/AMX, it saturates elsewhere), "
                             "overflow-safe (one bit less per dense convolution; right on every CPU), "
                             "auto: the one for this CPU (default)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to replace it")
    if args.output.is_dir():
        raise IsADirectoryError(f"{args.output} is a directory; give a file name")
    if (args.mean is None) != (args.std is None):
        raise ValueError("give both --mean and --std, or neither")
    if args.precision == "int8" and (args.format != "onnx" or args.exporter != "torchscript" or args.opset):
        raise ValueError("--precision int8 writes ONNX with the default exporter and opset: use --format onnx "
                         "without --exporter dynamo or --opset")
    from ..data.normalization import Normalization
    from ..export import DEFAULT_OPSET, DYNAMO_MIN_OPSET, check_parity, export_onnx, export_torchscript
    from ..models.registry import get_model
    from ..weights.card import ModelCard

    if args.weights is not None:
        from ..inference.loading import load_any

        loaded = load_any(args.weights)
        if loaded.model is None:
            raise ValueError(f"{args.weights}: an exported {loaded.kind} graph cannot be exported again")
        model, card, source = loaded.model, loaded.card, str(args.weights)
    else:
        model = get_model(args.model, num_classes=args.num_classes)
        card, source = ModelCard.default(model.config), f"untrained {args.model}"
    if args.mean is not None:
        card = replace(card, normalization=Normalization(tuple(args.mean), tuple(args.std)))
    options = dict(card=card, include_preprocessing=args.include_preprocessing, output=args.output_kind,
                   layout=args.layout)
    if args.precision == "int8":
        return _export_int8(model, card, source, args, options)
    with model.at_output_stride(args.output_stride):
        if args.format == "onnx":
            opset = args.opset or (DYNAMO_MIN_OPSET if args.exporter == "dynamo" else DEFAULT_OPSET)
            path = export_onnx(model, args.output, opset=opset, exporter=args.exporter, **options)
            what = f"ONNX opset {opset}, {args.exporter} exporter"
        else:
            path = export_torchscript(model, args.output, **options)
            what = "TorchScript (traced)"
        kind = args.output_kind or ("labels" if args.include_preprocessing else "logits")
        inputs = f"uint8 {'N×H×W×3' if args.layout == 'NHWC' else 'N×3×H×W'}" if args.include_preprocessing \
            else "normalised float N×3×H×W"
        print(f"wrote {path} from {source} ({what}; {inputs} in, {kind} out; "
              f"{path.stat().st_size / 2**20:.1f} MiB)")
        parity = check_parity(model, path)
    labels = kind == "labels"
    tolerance = LABELS_TOLERANCE if labels else LOGITS_TOLERANCE
    ok = all(value <= tolerance for value in parity.values())
    shown = [f"{h}x{w} " + (f"labels differ at {v:.3%} of pixels" if labels else f"max abs diff {v:.2e}")
             for (h, w), v in parity.items()]
    print("parity vs eager (batch 2): " + ", ".join(shown)
          + (" — ok" if ok else f" — FAILED (tolerance {tolerance:g}{' of pixels' if labels else ''})"))
    return 0 if ok else 1


def _export_int8(model: nn.Module, card: ModelCard, source: str, args: argparse.Namespace,
                 options: dict[str, Any]) -> int:
    """The int8 branch: calibrate, quantize, write, then labels against fp32 eager on the calibration photos."""
    from ..export.parity import label_disagreement
    from ..export.quantize import calibration_for, resolve_int8_rule, write_int8_onnx

    calibration = calibration_for(args.calibration, card.normalization, required=True)
    rule = resolve_int8_rule(args.int8_rule)
    with model.at_output_stride(args.output_stride):
        path = write_int8_onnx(model, calibration, args.output, rule=rule, **options)
        print(f"wrote {path} from {source} (int8 ONNX, {rule} rule, calibrated on {len(calibration)} images; "
              f"{path.stat().st_size / 2**20:.1f} MiB)")
        differing = label_disagreement(model, path, calibration)
    ok = differing <= INT8_LABELS_TOLERANCE
    print(f"labels vs fp32 eager on the calibration images: differ at {differing:.2%} of pixels"
          + (" — ok" if ok else f" — FAILED (tolerance {INT8_LABELS_TOLERANCE:.0%})"))
    return 0 if ok else 1

