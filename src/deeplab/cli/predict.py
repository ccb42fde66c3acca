"""``deeplab predict``: segment files, folders and globs into an output folder.

    deeplab predict -w model.pt photos/ extra/*.jpg --output out/ [--flip --scales paper] [--tile 1025]
"""

from __future__ import annotations

import argparse

from .common import add_model_arguments, build_predictor, crf_postprocess


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="segment images: label PNGs, overlays, probabilities, areas")
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    add_model_arguments(parser)
    parser.add_argument("--probabilities", action="store_true", help="also write <stem>_probs.npy (C×H×W float16)")
    parser.add_argument("--areas", action="store_true", help="also write <stem>_areas.json (pixels per class)")
    parser.add_argument("--no-overlay", action="store_true", help="skip the colour overlay JPEGs")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight (default 0.5)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.segment_files import OutputOptions, expand_inputs, segment_files
    from ..utils.files import ensure_writable_dir

    images, missing = expand_inputs(args.inputs)
    for path, message in missing:
        print(f"error: {path}: {message}")
    if not images:
        raise ValueError("no images to predict")
    ensure_writable_dir(args.output)
    predictor, loaded = build_predictor(args, keep_probabilities=args.probabilities)
    options = OutputOptions(probabilities=args.probabilities, areas=args.areas, overlay=not args.no_overlay,
                            alpha=args.alpha, force=args.force, palette=loaded.card.palette)
    report = segment_files(predictor, images, args.output, options, progress=not args.no_progress,
                           postprocess=crf_postprocess(args))
    for path, message in report.failed:
        if str(path) not in message:
            message = f"{path}: {message}"
        print(f"error: {message}")
    failed = len(report.failed) + len(missing)
    print(f"{len(images) - len(report.failed)} of {len(images) + len(missing)} inputs segmented into "
          f"{args.output}" + (f"; {failed} failed" if failed else ""))
    return 1 if report.failed or missing else 0
