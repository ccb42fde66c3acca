"""Temporal smoothing on a real drive: CamVid's validation split is one 30 fps sequence sampled every second
frame (``0016E5_07959.png``, ``_07961``, ...), so it is encoded here as a 15 fps H.264 video, decoded again (as
``deeplab predict`` would read it), and segmented once; each smoothing weight then runs the library's
``TemporalSmoother`` over the same per-frame probabilities. Reported per weight: flicker (the share of pixels
whose label changes between consecutive frames) and the mIoU of the smoothed labels against the
ground truth of every frame — smoothing trades the first against lag on moving objects.

    python benchmarks/video_smoothing.py -w runs/camvid/best.pt [--weights-list 0,0.3,0.5,0.7,0.85]
        [--frames 101] [--png smoothing.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deeplab.data.io import read_image, read_label
from deeplab.inference import Predictor
from deeplab.metrics import ConfusionMatrix
from deeplab.utils.machine import describe
from deeplab.video.io import VideoWriter, read_frames
from deeplab.video.segment import TemporalSmoother, flicker
from deeplab.visualize import plot_curves

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
VOID = 11


def plot(rows: list[dict], path: Path) -> None:
    series = {"flicker (% of pixels per frame)": [(r["weight"], 100 * r["flicker"]) for r in rows],
              "per-frame mIoU (%)": [(r["weight"], 100 * r["miou"]) for r in rows]}
    plot_curves(series, path, title="Temporal smoothing on CamVid's validation drive",
                x_label="smoothing weight (of the past)", columns=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--weights", type=Path, required=True, help="a CamVid model (11 classes)")
    parser.add_argument("--weights-list", default="0,0.3,0.5,0.7,0.85")
    parser.add_argument("--frames", type=int, default=101)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = [float(w) for w in args.weights_list.split(",")]
    frames = sorted((CAMVID / "val").glob("*.png"))[: args.frames]
    labels = [read_label(CAMVID / "valannot" / p.name) for p in frames]
    print(f"{len(frames)} CamVid val frames ({frames[0].stem} … {frames[-1].stem}) as a 15 fps video; {args.weights}")
    print(describe())
    predictor = Predictor.from_file(args.weights, return_probabilities=True)
    smoothers = {w: TemporalSmoother(w) for w in weights}
    matrices = {w: ConfusionMatrix(predictor.num_classes, ignore_index=VOID) for w in weights}
    changes: dict[float, list[float]] = {w: [] for w in weights}
    previous: dict[float, np.ndarray | None] = {w: None for w in weights}
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "camvid_val.mp4"
        with VideoWriter(video, 480, 360, Fraction(15)) as writer:
            for path in frames:
                writer.write(read_image(path))
        for frame, truth in tqdm(zip(read_frames(video), labels), total=len(frames), unit="frame"):
            probabilities = predictor.predict([frame])[0].probabilities
            for w in weights:
                smoothed = smoothers[w](probabilities).argmax(0)
                matrices[w].update(torch.from_numpy(truth), torch.from_numpy(smoothed))
                change = flicker(previous[w], smoothed)
                if change is not None:
                    changes[w].append(change)
                previous[w] = smoothed
    rows = [{"weight": w, "flicker": float(np.mean(changes[w])), "miou": matrices[w].miou} for w in weights]
    print(f"{'weight of the past':>20} {'flicker %':>10} {'mIoU %':>8} {'flicker vs none':>16}")
    for r in rows:
        print(f"{r['weight']:>20g} {100 * r['flicker']:>10.2f} {100 * r['miou']:>8.2f} "
              f"{r['flicker'] / rows[0]['flicker']:>15.2f}×")
    if args.png:
        plot(rows, args.png)
        print(f"chart: {args.png}")
    if args.json:
        args.json.write_text(json.dumps({"weights": str(args.weights), "frames": len(frames), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
