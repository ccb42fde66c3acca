"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.backbones.base import ALL_OUTPUT_STRIDES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


DEFAULT_TILE_ABOVE_MP = 2048 * 2048 / 1e6


def megapixels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of megapixels, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 megapixels, got {text}")
    return value


def label_map(text: str) -> dict[int, int]:
    """``255:1,3:0`` → {255: 1, 3: 0} (stored mask value → training label)."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = item.partition(":")
        try:
            mapping[int(source)] = int(target)
        except ValueError:
            raise argparse.ArgumentTypeError(f"label map entries look like VALUE:LABEL, e.g. 255:1, got {item!r}") \
                from None
        if not sep:
            raise argparse.ArgumentTypeError(f"label map entries look like VALUE:LABEL, e.g. 255:1, got {item!r}")
    if not mapping:
        raise argparse.ArgumentTypeError("an empty label map")
    return mapping


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """How stored mask values become labels: shared by check-data and eval (and data.* in configs)."""
    parser.add_argument("--ignore-index", type=int, default=None,
                        help="label value to ignore (default: the dataset's, 255)")
    parser.add_argument("--label-map", type=label_map, default=None, metavar="VALUE:LABEL,...",
                        help="map stored mask values to labels, e.g. 255:1 for 0/255 binary masks")


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
    parser.add_argument("--backend", choices=("torch", "onnxruntime", "openvino", "auto"), default=None,
                        help="inference engine (default: torch; .onnx files run on onnxruntime); auto: the fastest "
                             "here, timed on the first image")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8", "auto"), default="fp32",
                        help="fp32 (default, exact), bf16 (CPUs with AVX512-BF16/AMX), int8 (ONNX Runtime, or "
                             "--backend openvino / auto; calibrated on --calibration images), auto: the fastest "
                             "fp32/bf16 path within 99.5 %% label agreement with fp32 on the first image")
    parser.add_argument("--calibration", type=Path, default=None, metavar="FOLDER",
                        help="int8: images like the ones to segment (the first 16 of the folder, or one file)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--output-stride", type=int, choices=ALL_OUTPUT_STRIDES, default=None,
                        help="run at this output stride (the paper trains at 16, evaluates at 8)")
    parser.add_argument("--scales", type=scales, default=(1.0,),
                        help="test-time scales, e.g. 0.75,1,1.25, or 'paper' for 0.5..1.75 (default 1)")
    parser.add_argument("--flip", action="store_true", help="average with the left-right flipped image")
    parser.add_argument("--tile", type=positive_int, default=None,
                        help="sliding-window size (memory bounded by the tile and the image width)")
    parser.add_argument("--tile-above", type=megapixels, default=DEFAULT_TILE_ABOVE_MP, metavar="MP",
                        help=f"images above this many megapixels are tiled on their own (default "
                             f"{DEFAULT_TILE_ABOVE_MP:.1f}; 0: never)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF (pip install 'deeplab[crf]')")
    parser.add_argument("--crf-param", dest="crf_params", action="append", default=[], metavar="KEY=VALUE",
                        help="dense-CRF setting (implies --crf): iterations, bi_w, bi_xy_std, bi_rgb_std, pos_w, "
                             "pos_xy_std; defaults are DeepLab v2's VOC values")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")


def build_predictor(args: argparse.Namespace, *, keep_probabilities: bool = False, sample=None):
    """(Predictor, LoadedModel, InferencePath) from the shared model arguments. ``sample``: a function giving
    one real image, for ``--backend auto`` / ``--precision auto`` to time the candidates on."""
    import torch

    from ..export.fast_predictor import candidates, choose_path, fast_predictor
    from ..export.quantize import calibration_for, check_int8_path
    from ..export.runtimes import InferencePath
    from ..inference.loading import load_any

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    loaded = load_any(args.weights)
    precision = args.precision
    default_backend = "onnxruntime" if loaded.kind == "onnx" or precision == "int8" else "torch"
    backend = args.backend or default_backend
    if loaded.kind == "onnx" and (backend not in ("onnxruntime", "openvino") or precision == "bf16"):
        raise ValueError(f"{args.weights}: an .onnx file runs as it was exported (fp32 or int8), with --backend "
                         "onnxruntime or openvino")
    if precision == "int8":
        check_int8_path(backend, onnx_file=loaded.kind == "onnx")
    if backend == "onnxruntime" and loaded.kind != "onnx" and precision == "bf16":
        raise ValueError("--backend onnxruntime has no bf16 CPU path; use torch or openvino for bf16")
    if device.type != "cpu" and (backend != "torch" or precision != "fp32"):
        raise ValueError(f"--backend {backend} --precision {precision} are CPU paths; on {device} use the defaults")
    notify = lambda line: print(line, file=sys.stderr)  # noqa: E731
    # int8 needs calibration images; auto also weighs int8 when they are given
    source = getattr(args, "calibration", None) if precision in ("int8", "auto") else None
    calibration = calibration_for(source, loaded.card.normalization, required=precision == "int8")
    if loaded.kind == "onnx":  # it runs as it was exported: fp32, or int8 (`deeplab export --precision int8`)
        path = InferencePath(backend, loaded.backend.header.get("precision", "fp32"))
    elif "auto" in (backend, precision):
        if sample is None:
            raise ValueError("--backend/--precision auto need an image to time the candidates on")
        path = choose_path(loaded, candidates(backend, precision, int8=bool(calibration)), sample(),
                           output_stride=args.output_stride, threads=args.threads, notify=notify,
                           calibration=calibration)
    else:
        path = InferencePath(backend, precision, getattr(args, "compile", False))
    tile_above = int(args.tile_above * 1e6) if args.tile_above else None
    predictor = fast_predictor(loaded, path, output_stride=args.output_stride, threads=args.threads, device=device,
                               scales=args.scales, flip=args.flip, tile=args.tile, batch_size=args.batch_size,
                               return_probabilities=keep_probabilities or uses_crf(args), tile_above=tile_above,
                               notify=notify, calibration=calibration)
    return predictor, loaded, path


def resolve_device(name: str | None):
    """``--device``: cuda when there is one (default), checked here so a missing GPU is one line."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available here (this torch "
                             f"{torch.__version__} {'has no CUDA support' if torch.version.cuda is None else 'sees no GPU'})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


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
