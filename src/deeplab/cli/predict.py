"""``deeplab predict``: segment image files, folders, globs — and videos — into an output folder.

    deeplab predict -w model.pt photos/ extra/*.jpg --output out/ [--flip --scales paper] [--tile 1025]
                    [--skip-existing] [--areas] [--probabilities]
    deeplab predict -w model.pt drive.mp4 -o out/ [--smooth 0.5] [--frames]
    torchrun --nproc-per-node 2 -m deeplab predict -w model.pt photos/ -o out/ --skip-existing

Per-file errors go to stderr, once each, as they happen; the summary line goes to stdout. Exit status 0 when
every input was segmented (or was already finished, with --skip-existing), 1 when some failed. Under
``torchrun`` every process takes its share of the inputs (each file done once, the outputs those of one
process) and its share of the CPU cores; re-running with --skip-existing after a crash finishes what is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import add_model_arguments, build_predictor, crf_postprocess


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="segment images and videos: label PNGs, overlays, probabilities")
    parser.add_argument("inputs", nargs="+", help="image or video files, folders (their images) or glob patterns")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    add_model_arguments(parser)
    parser.add_argument("--probabilities", action="store_true", help="also write <stem>_probs.npy (C×H×W float16)")
    parser.add_argument("--areas", action="store_true", help="also write <stem>_areas.json (pixels per class)")
    parser.add_argument("--no-overlay", action="store_true", help="skip the colour overlay JPEGs")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight, 0..1 (default 0.5)")
    parser.add_argument("--smooth", type=smoothing_weight, default=0.0,
                        help="videos: weight of the past in an exponential moving average of the probabilities, "
                             "0 <= w < 1 (default 0: none)")
    parser.add_argument("--frames", action="store_true", help="videos: also write one label PNG per frame")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true", help="overwrite existing outputs")
    existing.add_argument("--skip-existing", action="store_true",
                          help="skip inputs whose outputs are all there and finish the others (e.g. after a crash)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run)


def smoothing_weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (1 would never update), got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..inference.inputs import expand_inputs
    from ..inference.segment_files import OutputOptions
    from ..utils.distributed import launched_by_torchrun
    from ..utils.files import ensure_writable_dir
    from ..video.io import VIDEO_SUFFIXES

    options = OutputOptions(probabilities=args.probabilities, areas=args.areas, overlay=not args.no_overlay,
                            alpha=args.alpha, force=args.force, skip_existing=args.skip_existing)
    found, missing = expand_inputs(args.inputs, extra_suffixes=VIDEO_SUFFIXES)
    for path, message in missing:
        print(f"error: {path}: {message}", file=sys.stderr)
    if not found and missing:
        return 2  # each input's problem is already printed, one line each
    if not found:
        raise ValueError("no images or videos to predict")
    ensure_writable_dir(args.output)
    if launched_by_torchrun():
        return _run_sharded(args, found, missing, options)
    done, skipped, failed = _predict(args, found, options)
    _summary(args, done, skipped, failed + len(missing), len(found) + len(missing))
    return 1 if failed or missing else 0


def _predict(args: argparse.Namespace, inputs: list[Path], options) -> tuple[int, int, int]:
    """(segmented, already done, failed) for these inputs."""
    from tqdm import tqdm

    from ..inference.segment_files import segment_files
    from ..video.io import VIDEO_SUFFIXES

    videos = [p for p in inputs if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in inputs if p not in videos]
    predictor, loaded, _ = build_predictor(args, keep_probabilities=args.probabilities or args.smooth > 0,
                                        sample=lambda: _first_image(images, videos))
    options.palette = loaded.card.palette
    report = segment_files(predictor, images, args.output, options, progress=not args.no_progress,
                           postprocess=crf_postprocess(args),
                           on_error=lambda _, message: tqdm.write(f"error: {message}", file=sys.stderr))
    done, skipped, failed = len(images) - len(report.failed) - len(report.skipped), len(report.skipped), \
        len(report.failed)
    for video in videos:
        outcome = _predict_video(args, predictor, video, options)
        done, skipped, failed = done + (outcome == "done"), skipped + (outcome == "skipped"), failed + (outcome == "failed")
    return done, skipped, failed


def _first_image(images: list[Path], videos: list[Path]):
    """The first input's pixels (a video's first frame), for --backend/--precision auto to time on."""
    from ..data.io import read_image
    from ..video.io import read_frames

    return read_image(images[0]) if images else next(read_frames(videos[0]))


def _predict_video(args: argparse.Namespace, predictor, video: Path, options) -> str:
    from ..video.segment import segment_video

    target = Path(args.output) / f"{video.stem}_overlay.mp4"
    if target.exists():
        if options.skip_existing:
            return "skipped"
        if not options.force:
            print(f"error: {target} exists (pass --force to overwrite, or --skip-existing to finish a run)",
                  file=sys.stderr)
            return "failed"
    try:
        result = segment_video(predictor, video, args.output, smooth=args.smooth, frame_pngs=args.frames,
                               palette=options.palette, alpha=args.alpha, batch_size=args.batch_size,
                               progress=not args.no_progress)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return "failed"
    print(f"{video} → {result.overlay} ({result.frames} frames, flicker {100 * result.flicker:.2f} % of pixels "
          "change label between frames)")
    return "done"


def _run_sharded(args: argparse.Namespace, found: list[Path], missing: list, options) -> int:
    """This process's share of the inputs and of the cores; the counts summed over the processes."""
    import torch

    from ..utils.distributed import all_reduce_sum, cleanup, init_distributed, shard_indices

    info = init_distributed(torch.device("cpu"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // local)
    try:
        mine = [found[i] for i in shard_indices(len(found), info)]
        counts = torch.tensor(_predict(args, mine, options), dtype=torch.int64)
        all_reduce_sum(counts, info)
    finally:
        cleanup(info)
    done, skipped, failed = counts.tolist()
    if info.is_main:
        _summary(args, done, skipped, failed + len(missing), len(found) + len(missing),
                 f" by {info.world_size} processes")
    return 1 if failed or missing else 0


def _summary(args: argparse.Namespace, done: int, skipped: int, failed: int, total: int, who: str = "") -> None:
    print(f"{done} of {total} inputs segmented into {args.output}{who}"
          + (f", {skipped} already done" if skipped else "") + (f"; {failed} failed" if failed else ""))
