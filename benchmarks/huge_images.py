"""Peak memory of predicting huge images: whole-image inference vs sliding windows kept in memory (a C×H×W
probability accumulator) vs streamed windows (bands finished and emitted as soon as no later window touches
them) — each in its own process, peak RSS as the kernel counts it — and whether the streamed labels equal the
in-memory windows' exactly.

Images are real photos (a VOC image tiled into a mosaic, like a drone or satellite strip) of 4, 12, 48 and 80
megapixels, saved as PNG; the model is any file ``-w`` takes (default the authors' MobileNetV2 ×0.5).

    python benchmarks/huge_images.py [--weights ../shared/data/weights/deeplabv3_257_mv_gpu.tflite]
        [--sizes 4,12,48,80] [--tile 513] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WHOLE_IMAGE_MAX_MP = 12  # whole-image inference above this needs tens of GB: not attempted
IN_MEMORY_MAX_MP = 48

CHILD = r"""
import resource, sys, time, numpy as np, torch
sys.path.insert(0, {src!r})
torch.set_num_threads({threads})
from deeplab.data.io import read_image
from deeplab.inference import Predictor
from deeplab.inference.tta import predict_probabilities
mode, image_path, weights, tile, out = sys.argv[1:6]
began = time.perf_counter()
image = read_image(image_path)
predictor = Predictor.from_file(weights, return_probabilities=False, tile_above=None)
with torch.inference_mode():
    if mode == "whole":
        labels = predictor.predict([image])[0].labels
    elif mode == "in-memory":
        x = predictor.normalization.to_tensor(image)
        labels = predict_probabilities(predictor._forward, x, tile=int(tile), window_batch_size=1)[0].argmax(0).numpy()
    else:
        predictor.tile = int(tile)
        labels = predictor.predict_streamed(image)
np.save(out, labels.astype(np.uint8))
print(time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def mosaic(source: Path, megapixels: float, path: Path) -> tuple[int, int]:
    """A real photo tiled (mirrored alternately, so seams are continuous) to about ``megapixels``, 4:3."""
    photo = np.asarray(Image.open(source).convert("RGB"))
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    rows = -(-height // photo.shape[0])
    cols = -(-width // photo.shape[1])
    strip = np.concatenate([photo if c % 2 == 0 else photo[:, ::-1] for c in range(cols)], axis=1)
    full = np.concatenate([strip if r % 2 == 0 else strip[::-1] for r in range(rows)], axis=0)[:height, :width]
    Image.fromarray(np.ascontiguousarray(full)).save(path, compress_level=1)
    return width, height


def run(mode: str, image: Path, weights: Path, tile: int, threads: int, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one prediction in a fresh process."""
    code = CHILD.format(src=str(ROOT / "src"), threads=threads)
    result = subprocess.run([sys.executable, "-c", code, mode, str(image), str(weights), str(tile), str(out)],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if result.returncode != 0:
        raise RuntimeError(f"{mode} on {image.name} failed: {result.stderr.strip().splitlines()[-1:]}")
    seconds, kilobytes = result.stdout.split()[-2:]
    return float(seconds), int(kilobytes) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "deeplabv3_257_mv_gpu.tflite")
    parser.add_argument("--photo", type=Path, default=SHARED / "voc2012_val_dev" / "JPEGImages" / "2007_000187.jpg")
    parser.add_argument("--sizes", default="4,12,48,80", help="megapixels, comma-separated")
    parser.add_argument("--tile", type=int, default=513)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    print(f"{args.weights.name}, tile {args.tile}, {args.threads} threads, load {os.getloadavg()[0]:.2f}")
    print(f"{'MP':>4} {'size':>11}  {'whole image':>16}  {'windows in memory':>18}  {'streamed windows':>17}  labels")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for mp in [float(v) for v in args.sizes.split(",")]:
            image = folder / f"mosaic_{mp:g}mp.png"
            width, height = mosaic(args.photo, mp, image)
            row = {"megapixels": mp, "width": width, "height": height}
            for mode, limit in (("whole", WHOLE_IMAGE_MAX_MP), ("in-memory", IN_MEMORY_MAX_MP), ("streamed", 1e9)):
                if mp > limit:
                    continue
                row[mode] = run(mode, image, args.weights, args.tile, args.threads, folder / f"{mode}.npy")
            streamed = np.load(folder / "streamed.npy")
            same = None
            if "in-memory" in row:
                same = bool(np.array_equal(np.load(folder / "in-memory.npy"), streamed))
            row["streamed_equals_in_memory"] = same
            rows.append(row)
            cells = [f"{row[m][1]:7.0f} MB {row[m][0]:5.0f} s" if m in row else f"{'not run':>16}"
                     for m in ("whole", "in-memory", "streamed")]
            print(f"{mp:4g} {width:>5}x{height:<5}  {cells[0]:>16}  {cells[1]:>18}  {cells[2]:>17}  "
                  f"{'identical' if same else 'n/a' if same is None else 'DIFFER'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print(f"(self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; finished "
          f"{time.strftime('%H:%M:%S')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
