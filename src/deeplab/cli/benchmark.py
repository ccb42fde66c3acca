"""``deeplab benchmark``: inference paths timed side by side, in one process and one run.

    deeplab benchmark -w model.pt [--size 513] [--output-stride 16] [--batch 1] [--threads 2] --compare
    deeplab benchmark --model deeplabv3_resnet101 --size 513 --backend openvino --precision bf16
    deeplab benchmark -w model.pt --pareto --dataset camvid --root data/camvid --split val [--crf] [--limit 30]

The first row is always fp32 eager (the unfolded model, channels-last: what ``predict`` ran before the fast
paths); the others are the requested path, or with ``--compare`` every path this machine offers. Each row:
latency (median/min/max over ``--repeats`` round-robin runs after ``--warmup``), images/s, the ratio to the
first row, achieved GFLOP/s and its share of the machine's own peak in that precision (the best
convolution rate, measured in the same run), label agreement and max |Δ| of the logits against fp32 eager
on a real photo.

``--pareto`` scores every test-time strategy (output stride 16/8, scales, flip, CRF) on every path against
real labels and times each, for the accuracy-against-time table, its Pareto front and a scatter plot
(``benchmark/pareto.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import positive_int
from .eval import add_data_arguments, load_dataset

if TYPE_CHECKING:
    from ..weights.card import ModelCard

DEFAULT_PHOTO = Path("../shared/data/voc2012_val_dev/JPEGImages/2007_000187.jpg")
DEFAULT_PHOTOS = {"camvid": Path("../shared/data/camvid/val/0016E5_07959.png")}  # by the model card's dataset


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("benchmark", help="time inference paths (backends, precisions) side by side")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-w", "--weights", help="a model file (any kind -w takes except .onnx)")
    source.add_argument("--model", help="an architecture by name (deeplab models), random weights, 21 classes")
    parser.add_argument("--size", default="513", help="input H or H,W (default 513)")
    parser.add_argument("--output-stride", type=int, default=None)
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--threads", type=positive_int, default=None, help="compute threads (default: all cores)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default=None,
                        help="the path to time (default torch); with --pareto: only it beside torch fp32")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                        help="fp32 (default), bf16, int8 (ONNX Runtime or OpenVINO, calibrated on --calibration)")
    parser.add_argument("--calibration", type=Path, default=None, metavar="FOLDER",
                        help="images to calibrate int8 on; with --compare, adds the onnxruntime and openvino int8 paths")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (inductor) paths; slow to build")
    parser.add_argument("--compare", action="store_true", help="every path this machine offers")
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed rounds (default 10; 3 with --pareto)")
    parser.add_argument("--warmup", type=positive_int, default=3)
    parser.add_argument("--photo", type=Path, default=None, help=f"real photo for agreement (default: a CamVid val frame for CamVid models, else {DEFAULT_PHOTO})")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--png", type=Path, help="write a bar chart of images/s (with --pareto: the scatter plot)")
    pareto = parser.add_argument_group("accuracy against time (--pareto; the data options are eval's)")
    pareto.add_argument("--pareto", action="store_true", help="mIoU and ms/image of every strategy on every path")
    pareto.add_argument("--crf", action="store_true", help="with --pareto: also every strategy followed by the CRF")
    add_data_arguments(pareto, required=False)
    parser.set_defaults(run=run)


def _size(text: str) -> tuple[int, int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--size must be H or H,W, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 33:
        raise ValueError(f"--size must be H or H,W of at least 33 pixels, got {text!r}")
    return (values[0], values[-1])


def _paths(args: argparse.Namespace):
    from ..export.runtimes import InferencePath
    from ..utils.machine import has_fast_bf16

    if not args.compare:
        precision = args.precision or "fp32"
        backend = args.backend or ("onnxruntime" if precision == "int8" else "torch")
        wanted = [InferencePath(backend, precision)]
        return wanted + ([InferencePath("torch", precision, compile=True)] if args.compile else [])
    precisions = ["fp32", "bf16"] if has_fast_bf16() else ["fp32"]
    paths = [InferencePath("torch", p) for p in precisions] + [InferencePath("onnxruntime", "fp32")]
    paths += [InferencePath("openvino", p) for p in precisions]
    paths += [InferencePath(b, "int8") for b in ("onnxruntime", "openvino")] if args.calibration else []
    return paths + ([InferencePath("torch", p, compile=True) for p in precisions] if args.compile else [])


def _input(args: argparse.Namespace, card: "ModelCard", size: tuple[int, int]):
    """The photo (resized to ``size``, repeated to the batch), normalised."""
    import numpy as np
    from PIL import Image

    from ..data.io import read_image

    photo = args.photo or DEFAULT_PHOTOS.get(card.dataset or "", DEFAULT_PHOTO)
    if not photo.is_file():
        raise FileNotFoundError(f"{photo}: no such photo (give one with --photo)")
    image = np.asarray(Image.fromarray(read_image(photo)).resize((size[1], size[0]), Image.BILINEAR))
    return card.normalization.to_tensor([image] * args.batch), photo


def run(args: argparse.Namespace) -> int:
    if args.pareto:
        return run_pareto(args)
    if args.dataset or args.crf:
        raise ValueError("--dataset and --crf belong to --pareto")
    args.repeats = args.repeats or 10
    import torch
    from tqdm import tqdm

    from ..benchmark.measure import Measured, agreement, count_flops, resident_mb, time_round_robin
    from ..benchmark.peaks import ceilings, compute_rates
    from ..benchmark.report import rows, table, write_chart, write_json
    from ..export.quantize import calibration_for
    from ..export.runtimes import build_runner
    from ..inference.loading import load_any
    from ..models.registry import get_model
    from ..utils.machine import describe
    from ..weights.card import ModelCard

    size = _size(args.size)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights:
        loaded = load_any(args.weights)
        if loaded.model is None:
            raise ValueError(f"{args.weights}: an exported graph has no torch model to convert; give the model file")
        model, card = loaded.model.eval(), loaded.card
    else:
        model = get_model(args.model, num_classes=21).eval()
        card = ModelCard.default(model.config)
    x, photo = _input(args, card, size)
    calibration = calibration_for(args.calibration, card.normalization, required=args.precision == "int8")
    print(describe())
    print("measuring this machine's compute rates ...", file=sys.stderr)
    peaks = compute_rates()
    with model.at_output_stride(args.output_stride), torch.inference_mode():
        name = args.weights or args.model
        eager = model.to(memory_format=torch.channels_last)
        reference = eager(x.contiguous(memory_format=torch.channels_last)).float()
        flops = count_flops(eager, x)
        runners = {"torch eager fp32": lambda t: eager(t.contiguous(memory_format=torch.channels_last))}
        measured = [Measured("torch eager fp32", "fp32", rss_mb=resident_mb())]
        for path in tqdm(_paths(args), desc="building", unit="path", file=sys.stderr):
            runner = build_runner(model, path, threads=torch.get_num_threads(), calibration=calibration)
            measured.append(Measured(path.name, path.precision))
            measured[-1].agreement, measured[-1].max_abs_diff = agreement(reference, runner(x))
            measured[-1].rss_mb = resident_mb()
            runners[path.name] = runner
        measured[0].agreement, measured[0].max_abs_diff = 1.0, 0.0
        with tqdm(total=args.repeats, desc="timing", unit="round", file=sys.stderr) as bar:
            times = time_round_robin(runners, x, warmup=args.warmup, repeats=args.repeats,
                                     progress=lambda done, _: bar.update(1))
    for m in measured:
        m.seconds = times[m.name]
    results = rows(measured, flops=flops, batch=args.batch, peaks=peaks)
    stride = args.output_stride or model.output_stride
    print(f"{name}: {size[0]}x{size[1]}, batch {args.batch}, output stride {stride}, {flops / 1e9:.1f} GFLOP per "
          f"batch; agreement on {photo.name}")
    usable = ceilings(peaks)
    print("compute rates here (peaks: best convolution): " + ", ".join(
        f"{k} {v:.0f} G{'OP' if k.startswith('int8') else 'FLOP'}/s"
        + (" (below fp32: emulated, no peak)" if k in ("bf16", "int8") and k not in usable else "")
        for k, v in peaks.items()))
    print(table(results))
    print(describe().split("; ")[-1] + " at the end")
    if args.json:
        write_json({"model": str(name), "size": size, "batch": args.batch, "output_stride": stride, "flops": flops,
                    "peaks_gflops": peaks, "machine": describe(), "results": results}, args.json)
    if args.png:
        write_chart(results, args.png, f"{Path(str(name)).name}, {size[0]}x{size[1]}, batch {args.batch}, OS{stride}")
    return 0


def run_pareto(args: argparse.Namespace) -> int:
    """``--pareto``: the accuracy-against-time table, JSON and scatter plot."""
    import torch
    from tqdm import tqdm

    from ..benchmark.pareto import default_strategies, measure_tradeoffs, table
    from ..benchmark.report import write_json, write_tradeoff_chart
    from ..export.quantize import calibration_for
    from ..export.runtimes import InferencePath
    from ..inference.loading import load_any
    from ..utils.machine import describe

    if not args.weights or not args.dataset:
        raise ValueError("--pareto needs a trained model (-w) and labelled data (--dataset, --root, --split)")
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args)
    loaded = load_any(args.weights)
    calibration = calibration_for(args.calibration, loaded.card.normalization, required=args.precision == "int8")
    chosen = args.backend is not None or args.precision is not None  # one path beside fp32, or all of them
    paths = _paths(argparse.Namespace(**{**vars(args), "compare": not chosen}))
    if chosen:
        paths = [InferencePath("torch", "fp32")] + [p for p in paths if p != InferencePath("torch", "fp32")]
    strategies = default_strategies(args.crf)
    print(describe())
    count = min(args.limit or len(dataset), len(dataset))
    with tqdm(total=len(paths) * len(strategies) + 1, desc="pareto", unit="step", file=sys.stderr) as bar:
        def progress(line: str) -> None:
            if not line.startswith("building"):
                bar.update(1)
            bar.set_postfix_str(line[:60])

        rows = measure_tradeoffs(loaded, dataset, paths, strategies, limit=args.limit, calibration=calibration,
                                 threads=torch.get_num_threads(), repeats=args.repeats or 3, progress=progress)
    print(f"{args.weights} on {dataset.info.name} ({count} images; ms/image on the first, median of "
          f"{args.repeats or 3} round-robin runs)")
    print(table(rows))
    print(describe().split("; ")[-1] + " at the end")
    title = f"{Path(str(args.weights)).name} on {dataset.info.name} ({count} images)"
    if args.json:
        write_json({"model": str(args.weights), "dataset": dataset.info.name, "images": count,
                    "machine": describe(), "results": [r.as_dict() for r in rows]}, args.json)
    if args.png:
        write_tradeoff_chart(rows, args.png, title)
    return 0
