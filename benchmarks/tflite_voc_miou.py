"""mIoU of the imported TFLite DeepLabV3 (MobileNetV2 ×0.5) on the VOC 2012 val_dev images.

Two protocols, one confusion matrix each over the whole set (21 classes, label 255 ignored):

- ``resized``: each image resized (PIL bilinear) to the graph's 257×257, predicted, and the label map
  resized back to the original size with nearest — what the TFLite app does;
- ``native``: the full image at its own size (our model is fully convolutional), normalised x/127.5 − 1.

``--reference`` also runs the TFLite interpreter (``ai_edge_litert``) on the ``resized`` protocol, as a
cross-check that the imported model scores the same as the original graph.

Run: ``.venv/bin/python benchmarks/tflite_voc_miou.py [--voc DIR] [--weights FILE] [--device cuda]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from deeplab.data.datasets import VOC_CLASSES
from deeplab.weights.tflite import import_tflite_file, tflite_input

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUM_CLASSES, IGNORE = len(VOC_CLASSES), 255
Predictor = Callable[[torch.Tensor], np.ndarray]  # 1x3xHxW normalised input → HxW class map


def confusion(label: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    valid = label != IGNORE
    index = label[valid].astype(np.int64) * NUM_CLASSES + prediction[valid].astype(np.int64)
    return np.bincount(index, minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)


def miou(matrix: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(mean IoU over classes present in labels or predictions, per-class IoU, pixel accuracy)."""
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou, float(inter.sum() / matrix.sum())


def evaluate(ids: list[str], voc: Path, predict: Predictor,
             size: tuple[int, int] | None) -> tuple[np.ndarray, float, float]:
    """Confusion matrix over ``ids``, wall seconds and the median seconds of one prediction (robust to a
    busy machine); ``size`` resizes inputs, predictions go back to the label's size by nearest."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    latencies = []
    start = time.perf_counter()
    for image_id in ids:
        image = Image.open(voc / "JPEGImages" / f"{image_id}.jpg").convert("RGB")
        label = np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))  # palette indices
        x = tflite_input(image, size)
        tick = time.perf_counter()
        prediction = predict(x)
        latencies.append(time.perf_counter() - tick)
        if prediction.shape != label.shape:
            prediction = np.asarray(Image.fromarray(prediction.astype(np.uint8)).resize(image.size, Image.NEAREST))
        matrix += confusion(label, prediction)
    return matrix, time.perf_counter() - start, float(np.median(latencies))


def torch_predictor(model: torch.nn.Module, device: torch.device) -> Predictor:
    def predict(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(x.to(device))[0].argmax(0).cpu().numpy()
    return predict


def tflite_predictor(weights: Path) -> Predictor:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(weights))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def predict(x: torch.Tensor) -> np.ndarray:
        interpreter.set_tensor(source, x.permute(0, 2, 3, 1).contiguous().numpy())
        interpreter.invoke()
        return interpreter.get_tensor(target)[0].argmax(-1)
    return predict


def report(name: str, matrix: np.ndarray, seconds: float, median: float) -> None:
    mean, iou, accuracy = miou(matrix)
    print(f"{name:<20} mIoU {100 * mean:6.2f} %  pixel acc {100 * accuracy:6.2f} %  "
          f"wall {seconds:6.1f} s  median prediction {1000 * median:.0f} ms")
    print("    " + " ".join(f"{c[:5]}={100 * v:.0f}" for c, v in zip(VOC_CLASSES, iou)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DATA / "weights" / "deeplabv3_257_mv_gpu.tflite")
    parser.add_argument("--voc", type=Path, default=DATA / "voc2012_val_dev")
    parser.add_argument("--split", default="val_dev.txt", help="id list inside --voc")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadier on a shared, busy machine")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--reference", action="store_true", help="also score the TFLite interpreter (resized)")
    args = parser.parse_args(argv)

    ids = (args.voc / args.split).read_text().split()
    ids = ids[: args.limit] if args.limit else ids
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, card = import_tflite_file(args.weights)
    model = model.to(device)
    size = card.input_size
    predict = torch_predictor(model, device)
    print(f"{len(ids)} images from {args.voc}, device {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    report(f"ours, {size[0]}x{size[1]}", *evaluate(ids, args.voc, predict, size))
    report("ours, native size", *evaluate(ids, args.voc, predict, None))
    if args.reference:
        report(f"tflite, {size[0]}x{size[1]}", *evaluate(ids, args.voc, tflite_predictor(args.weights), size))


if __name__ == "__main__":
    main()
