"""Evaluate a Predictor on a labelled dataset: one confusion matrix over every pixel of every image.

Protocols: native resolution (the model is fully convolutional), or ``input_size=N`` — every image resized to
N×N like a fixed-input deployment (e.g. the 257×257 TFLite file), probabilities resized back bilinearly to
the label's size before the argmax. Test-time options (output stride, scales, flip, tiling) live in the
Predictor; an optional ``postprocess(image, prediction) → labels`` applies e.g. the dense CRF.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .data.datasets import Sample, SegmentationDataset
from .inference import Prediction, Predictor
from .metrics import ConfusionMatrix


@dataclass
class EvaluationResult:
    matrix: ConfusionMatrix
    images: int
    seconds: float
    seconds_per_image: list[float] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds_per_image)) if self.seconds_per_image else float("nan")


def evaluate_dataset(predictor: Predictor, dataset: SegmentationDataset, *, input_size: int | None = None,
                     postprocess: Callable[[np.ndarray, Prediction], np.ndarray] | None = None,
                     limit: int | None = None, progress: bool = True,
                     on_prediction: Callable[[Sample, np.ndarray], None] | None = None) -> EvaluationResult:
    """``on_prediction(sample, labels)`` sees every image's result (e.g. to write overlays)."""
    info = dataset.info
    count = min(limit or len(dataset), len(dataset))
    matrix = ConfusionMatrix(info.num_classes, info.ignore_index)
    times: list[float] = []
    start = time.perf_counter()
    for index in tqdm(range(count), desc="eval", unit="img", disable=not progress):
        sample = dataset.read(index)
        if sample.label is None:
            raise ValueError(f"{sample.image_path}: has no label file to evaluate against")
        began = time.perf_counter()
        labels = _predict(predictor, sample.image, input_size, postprocess, info.num_classes)
        times.append(time.perf_counter() - began)
        if labels.shape != sample.label.shape:
            raise ValueError(f"{sample.mask_path}: label is {sample.label.shape[1]}x{sample.label.shape[0]}, "
                             f"image {sample.image_path.name} is {labels.shape[1]}x{labels.shape[0]}")
        matrix.update(torch.from_numpy(sample.label), torch.from_numpy(labels), source=str(sample.mask_path))
        if on_prediction is not None:
            on_prediction(sample, labels)
    return EvaluationResult(matrix, count, time.perf_counter() - start, times)


def _predict(predictor: Predictor, image: np.ndarray, input_size: int | None, postprocess, num_classes: int
             ) -> np.ndarray:
    if input_size is None:
        prediction = predictor.predict([image])[0]
    else:
        resized = np.asarray(Image.fromarray(image).resize((input_size, input_size), Image.BILINEAR))
        probabilities = predictor.predict_batch([resized])
        back = F.interpolate(probabilities.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
        probs = back[0].cpu().numpy()
        prediction = Prediction(probs.argmax(0), probs, tuple(str(i) for i in range(probs.shape[0])))
    if prediction.probabilities is not None and prediction.probabilities.shape[0] != num_classes:
        raise ValueError(f"the model predicts {prediction.probabilities.shape[0]} classes, the dataset has "
                         f"{num_classes}")
    return postprocess(image, prediction) if postprocess else prediction.labels
