"""Evaluate a Predictor on a labelled dataset: one confusion matrix over every pixel of every image.

This one loop serves ``deeplab eval``, the demo and the validation during training (they differ in options,
not in code). Protocols: native resolution (the model is fully convolutional), or ``input_size=N`` — every
image resized to N×N like a fixed-input deployment (e.g. the 257×257 TFLite file), probabilities resized back
bilinearly to the label's size before the argmax. Test-time options (output stride, scales, flip, tiling)
live in the Predictor; an optional ``postprocess(image, prediction) → labels`` applies e.g. the dense CRF.

Under ``torchrun`` each rank evaluates the samples ``rank, rank + W, ...`` and the matrices are summed, so the
result equals one process's on any dataset length (no sample counted twice, none left out). Images are read
one batch ahead on a thread, so decoding overlaps the forward passes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..data.dataset import Sample, SegmentationDataset
from ..metrics import ConfusionMatrix
from ..utils.distributed import DistInfo, all_reduce_sum, shard_indices
from .predictor import Prediction, Predictor

Postprocess = Callable[[np.ndarray, Prediction], np.ndarray]


@dataclass
class EvaluationResult:
    matrix: ConfusionMatrix
    images: int
    seconds: float
    seconds_per_image: list[float] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds_per_image)) if self.seconds_per_image else float("nan")


def evaluate(predictor: Predictor, dataset: SegmentationDataset, *, input_size: int | None = None,
             postprocess: Postprocess | None = None, limit: int | None = None, progress: bool = True,
             on_prediction: Callable[[Sample, np.ndarray], None] | None = None,
             info: DistInfo = DistInfo()) -> EvaluationResult:
    """The dataset-level confusion matrix of ``predictor`` on the first ``limit`` samples (default all).

    ``on_prediction(sample, labels)`` sees every image's result (e.g. to write overlays). Under DDP every rank
    must call it; the returned matrix is the sum over ranks, the timings are this rank's."""
    data = dataset.info
    count = min(limit or len(dataset), len(dataset))
    matrix = ConfusionMatrix(data.num_classes, data.ignore_index)
    times: list[float] = []
    start = time.perf_counter()
    mine = shard_indices(count, info)
    with tqdm(total=len(mine), desc="eval", unit="img", disable=not (progress and info.is_main), leave=False) as bar:
        for samples in _read_ahead(dataset, mine, predictor.batch_size):
            began = time.perf_counter()
            labels = _predict(predictor, [s.image for s in samples], input_size, postprocess, data.num_classes)
            times += [(time.perf_counter() - began) / len(samples)] * len(samples)
            for sample, predicted in zip(samples, labels):
                if predicted.shape != sample.label.shape:
                    raise ValueError(f"{sample.mask_path}: label is {sample.label.shape[1]}x{sample.label.shape[0]}, "
                                     f"image {sample.image_path.name} is {predicted.shape[1]}x{predicted.shape[0]}")
                matrix.update(torch.from_numpy(sample.label), torch.from_numpy(predicted), source=str(sample.mask_path))
                if on_prediction is not None:
                    on_prediction(sample, predicted)
            bar.update(len(samples))
    all_reduce_sum(matrix.matrix, info)
    return EvaluationResult(matrix, count, time.perf_counter() - start, times)


def _read_ahead(dataset: SegmentationDataset, indices: Sequence[int], batch: int) -> Iterator[list[Sample]]:
    """Batches of labelled samples; the next batch is read on a thread while the caller predicts this one."""
    def read(chunk: Sequence[int]) -> list[Sample]:
        samples = [dataset.read(i) for i in chunk]
        for sample in samples:
            if sample.label is None:
                raise ValueError(f"{sample.image_path}: has no label file to evaluate against")
        return samples

    chunks = [indices[i:i + batch] for i in range(0, len(indices), batch)]
    if not chunks:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="eval-read") as pool:
        pending = pool.submit(read, chunks[0])
        for following in [*chunks[1:], None]:
            samples = pending.result()
            if following is not None:
                pending = pool.submit(read, following)
            yield samples


def _predict(predictor: Predictor, images: list[np.ndarray], input_size: int | None,
             postprocess: Postprocess | None, num_classes: int) -> list[np.ndarray]:
    if input_size is None:
        predictions = predictor.predict(images)
    else:
        predictions = [_predict_resized(predictor, image, input_size) for image in images]
    for prediction in predictions:
        if prediction.num_classes != num_classes:
            raise ValueError(f"the model predicts {prediction.num_classes} classes, the dataset has {num_classes}")
    if postprocess is None:
        return [p.labels for p in predictions]
    return [postprocess(image, p) for image, p in zip(images, predictions)]


def _predict_resized(predictor: Predictor, image: np.ndarray, size: int) -> Prediction:
    """The fixed-input protocol: run at size×size, resize the probabilities back to the image's size."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    probabilities = predictor.predict_batch([resized])
    back = F.interpolate(probabilities.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
    probs = back[0].cpu().numpy()
    names = predictor.class_names or tuple(str(i) for i in range(probs.shape[0]))
    return Prediction(probs.argmax(0), probs, tuple(names))
