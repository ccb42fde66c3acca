"""``deeplab export``: a model file (or an untrained named model) as ONNX or TorchScript, then a parity check.

    deeplab export --weights model.safetensors --format onnx --output model.onnx [--opset 17]
                   [--include-preprocessing] [--output-kind labels|logits|probabilities] [--force]
    deeplab export --model deeplabv3_resnet50 --num-classes 21 --format torchscript --output bench.pt

An existing output is never replaced without ``--force``. After writing, the file is run against the eager
model at two sizes other than the trace size (batch 2); a mismatch exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import positive_int

if TYPE_CHECKING:
    from ..inference import Normalization

# Largest accepted difference from eager: float logits/probabilities, and the fraction of differing labels
# (ties between two classes may break either way after float rounding).
LOGITS_TOLERANCE = 1e-3
LABELS_TOLERANCE = 1e-4


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a model to ONNX or TorchScript and check parity")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="a model file written by save_model (.safetensors/.pt)")
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
                        help="normalisation mean on x/255 (default: the file's metadata, ImageNet for --model)")
    parser.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation std (as --mean)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=None,
                        help="export at this output stride (the ASPP rates follow)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to replace it")
    if args.output.is_dir():
        raise IsADirectoryError(f"{args.output} is a directory; give a file name")
    from ..export import MissingDependencyError

    try:
        return _export(args)
    except MissingDependencyError as error:  # an ImportError, which the dispatcher does not print as one line
        print(f"deeplab export: error: {error}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..export import DEFAULT_OPSET, DYNAMO_MIN_OPSET, check_parity, export_onnx, export_torchscript
    from ..inference import IMAGENET
    from ..models.builders import get_model

    if args.weights is not None:
        model, metadata = load_model(args.weights)
        source = str(args.weights)
    else:
        model, metadata, source = get_model(args.model, num_classes=args.num_classes), {}, f"untrained {args.model}"
    if args.output_stride is not None:
        model.set_output_stride(args.output_stride)
    mean, std = _normalization(args, metadata, IMAGENET)
    options = dict(include_preprocessing=args.include_preprocessing, output=args.output_kind, mean=mean, std=std,
                   scale=float(metadata.get("scale", IMAGENET.scale)), layout=args.layout, metadata=metadata)
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


def _normalization(args: argparse.Namespace, metadata: dict,
                   default: Normalization) -> tuple[list[float], list[float]]:
    """--mean/--std, else the model file's, else (an untrained --model only) ImageNet's."""
    if args.mean is not None and args.std is not None:
        return args.mean, args.std
    if (args.mean is None) != (args.std is None):
        raise ValueError("give both --mean and --std, or neither")
    if "mean" in metadata and "std" in metadata:
        return list(metadata["mean"]), list(metadata["std"])
    if args.include_preprocessing and args.weights is not None:
        raise ValueError(f"{args.weights}: the model file's metadata has no mean/std; pass --mean R G B --std R G B "
                         "to bake the normalisation into the graph")
    return list(default.mean), list(default.std)
