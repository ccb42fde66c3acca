"""What the dense CRF (DeepLab v1/v2's post-processing, dropped for DeepLabV3) buys on the VOC dev images.

The authors' imported DeepLabV3 (``deeplabv3_257_mv_gpu.tflite``: MobileNetV2 ×0.5, OS 8, COCO + VOC
trainaug) predicts each val_dev image at its native size (normalisation from the imported model's card, the
model's ``align_corners`` as imported, no test-time augmentation); the softmax probabilities are scored
as they are and after ``deeplab.crf.dense_crf`` (DeepLab v2's VOC parameters unless overridden). One
confusion matrix per variant over the whole set (21 classes, 255 ignored): mIoU and pixel accuracy, plus
the median seconds per image of the network and of the CRF, both on the CPU with ``--threads`` torch
threads (the CRF is single-threaded C++). Medians, because the machine may be shared and busy.

Run: ``.venv/bin/python benchmarks/crf_voc.py [--voc DIR] [--weights FILE] [--limit N] [--iterations 10 ...]``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from deeplab.crf import CRFParams, dense_crf
from deeplab.data.datasets import voc_dataset
from deeplab.inference import Predictor
from deeplab.metrics import ConfusionMatrix
from deeplab.weights.tflite import import_tflite_file

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DATA / "weights" / "deeplabv3_257_mv_gpu.tflite")
    parser.add_argument("--voc", type=Path, default=DATA / "voc2012_val_dev")
    parser.add_argument("--split", default="val_dev.txt", help="id list inside --voc")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the network (default 1)")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    defaults = CRFParams()
    for field in fields(CRFParams):  # --iterations, --pos-w, --bi-xy-std, ...
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name), help=f"CRF {field.name} (default %(default)s)")
    args = parser.parse_args(argv)
    params = CRFParams(**{f.name: getattr(args, f.name) for f in fields(CRFParams)})

    torch.set_num_threads(args.threads)
    dataset = voc_dataset(args.voc, args.split)
    count = min(args.limit, len(dataset)) if args.limit else len(dataset)
    model, card = import_tflite_file(args.weights)
    predictor = Predictor(model, normalization=card.normalization, batch_size=1,
                          class_names=card.classes)  # align_corners: the model's, as imported
    num_classes = card.num_classes
    plain, refined = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    network_s, crf_s, gains = [], [], []
    print(f"{count} images from {args.voc}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"align_corners={predictor.align_corners}, CRF {params}")
    start = time.perf_counter()
    for index in range(count):
        image, label = dataset.read(index)[:2]
        tick = time.perf_counter()
        probabilities = predictor.predict([image])[0].probabilities
        network_s.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        marginals = dense_crf(image, probabilities, params)
        crf_s.append(time.perf_counter() - tick)
        target = torch.from_numpy(label)
        before, after = probabilities.argmax(0), marginals.argmax(0)
        plain.update(target, torch.from_numpy(before))
        refined.update(target, torch.from_numpy(after))
        valid = label != 255
        gains.append(float((after[valid] == label[valid]).mean() - (before[valid] == label[valid]).mean()))
        if (index + 1) % 10 == 0:
            print(f"  {index + 1}/{count}  mIoU {100 * plain.miou:.2f} -> {100 * refined.miou:.2f}", flush=True)
    wall = time.perf_counter() - start

    result = {
        "images": count, "threads": torch.get_num_threads(), "crf_params": asdict(params),
        "without_crf": {"miou": plain.miou, "pixel_accuracy": plain.pixel_accuracy},
        "with_crf": {"miou": refined.miou, "pixel_accuracy": refined.pixel_accuracy},
        "network_s_median": float(np.median(network_s)), "crf_s_median": float(np.median(crf_s)),
        "images_improved": int(sum(g > 0 for g in gains)), "images_worse": int(sum(g < 0 for g in gains)),
        "wall_s": wall,
        "iou_without_crf": plain.iou().tolist(), "iou_with_crf": refined.iou().tolist(),
    }
    net, crf = result["network_s_median"], result["crf_s_median"]
    print()
    print(f"| {count} VOC val_dev images, native size | mIoU % | pixel acc % | median s/image |")
    print("|---|---:|---:|---:|")
    print(f"| DeepLabV3 MNv2×0.5 (no CRF) | {100 * plain.miou:.2f} | {100 * plain.pixel_accuracy:.2f} | {net:.3f} |")
    print(f"| + dense CRF ({params.iterations} it.) | {100 * refined.miou:.2f} | "
          f"{100 * refined.pixel_accuracy:.2f} | {net:.3f} + {crf:.3f} (CRF {crf / net:.1f}× the network) |")
    print(f"\nΔ mIoU {100 * (refined.miou - plain.miou):+.2f} points, Δ pixel acc "
          f"{100 * (refined.pixel_accuracy - plain.pixel_accuracy):+.2f}; per-image accuracy better on "
          f"{result['images_improved']}, worse on {result['images_worse']}; wall {wall:.0f} s")
    names = list(card.classes)
    print("per-class IoU Δ: " + " ".join(
        f"{n[:5]}={100 * (b - a):+.1f}" for n, a, b in zip(names, result["iou_without_crf"], result["iou_with_crf"])
        if a == a and b == b))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
