"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse

from ..models.backbones.base import VALID_OUTPUT_STRIDES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def scales(text: str) -> tuple[float, ...]:
    """``0.5,0.75,1`` → (0.5, 0.75, 1.0); ``paper`` → the paper's six scales."""
    from ..inference.tta import PAPER_SCALES

    if text.strip() == "paper":
        return PAPER_SCALES
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be comma-separated numbers or 'paper', got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return values


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """How a model is chosen and run: shared by predict, eval and demo."""
    parser.add_argument("-w", "--weights", "--checkpoint", dest="weights", required=True,
                        help="model file: deeplab .pt/.safetensors or checkpoint, torchvision DeepLabV3 .pth, "
                             ".tflite (authors' model zoo) or .onnx (exported)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default=None,
                        help="default: onnxruntime for .onnx files, torch otherwise")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--output-stride", type=int, choices=VALID_OUTPUT_STRIDES, default=None,
                        help="run at this output stride (the paper trains at 16, evaluates at 8)")
    parser.add_argument("--scales", type=scales, default=(1.0,),
                        help="test-time scales, e.g. 0.75,1,1.25, or 'paper' for 0.5..1.75 (default 1)")
    parser.add_argument("--flip", action="store_true", help="average with the left-right flipped image")
    parser.add_argument("--tile", type=positive_int, default=None,
                        help="sliding-window size for large images (bounded memory)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF (pip install 'deeplab[crf]')")
    parser.add_argument("--crf-param", dest="crf_params", action="append", default=[], metavar="KEY=VALUE",
                        help="dense-CRF setting (implies --crf): iterations, bi_w, bi_xy_std, bi_rgb_std, pos_w, "
                             "pos_xy_std; defaults are DeepLab v2's VOC values")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")


def build_predictor(args: argparse.Namespace, *, keep_probabilities: bool = False):
    """(Predictor, LoadedModel) from the shared model arguments."""
    import torch

    from ..inference.loading import load_any
    from ..inference.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_any(args.weights)
    if args.backend == "onnxruntime" and loaded.kind != "onnx":
        raise ValueError(f"{args.weights}: --backend onnxruntime runs .onnx files; export one with deeplab export")
    if args.backend == "torch" and loaded.kind == "onnx":
        raise ValueError(f"{args.weights}: an .onnx file runs with --backend onnxruntime")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    predictor = Predictor.from_loaded(loaded, device=device, output_stride=args.output_stride, scales=args.scales,
                                      flip=args.flip, tile=args.tile, batch_size=args.batch_size,
                                      return_probabilities=keep_probabilities or uses_crf(args))
    return predictor, loaded


def uses_crf(args: argparse.Namespace) -> bool:
    return bool(args.crf or args.crf_params)


def crf_postprocess(args: argparse.Namespace):
    """None, or ``(image, prediction) → labels`` refined by the dense CRF with ``--crf-param`` settings."""
    if not uses_crf(args):
        return None
    import dataclasses

    from ..crf import CRFParams, dense_crf

    fields = {f.name: f.type for f in dataclasses.fields(CRFParams)}
    settings = {}
    for item in args.crf_params:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise ValueError(f"--crf-param {item!r}: use KEY=VALUE with KEY one of {', '.join(fields)}")
        try:
            settings[key] = int(value) if key == "iterations" else float(value)
        except ValueError:
            raise ValueError(f"--crf-param {item!r}: {value!r} is not a number") from None
    params = CRFParams(**settings)
    return lambda image, prediction: dense_crf(image, prediction.probabilities, params).argmax(0)
