"""Segmentation metrics from one confusion matrix accumulated over the whole dataset.

Semantics: pixels labelled ``ignore_index`` are excluded; a class absent from
both the ground truth and the predictions has IoU NaN and is left out of the mean; a class present in the
ground truth but never predicted counts as 0. A label value ≥ ``num_classes`` that is not the ignore value
is an error (reference implementations drop such pixels silently while the loss crashes on them).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p`` (int64, on the CPU)."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: Tensor, prediction: Tensor, *, source: str = "labels") -> None:
        """Add a batch: ``target`` and ``prediction`` are integer tensors of the same shape."""
        if target.shape != prediction.shape:
            raise ValueError(f"{source}: target shape {tuple(target.shape)} != prediction {tuple(prediction.shape)}")
        target, prediction = target.reshape(-1).long().cpu(), prediction.reshape(-1).long().cpu()
        keep = target != self.ignore_index if self.ignore_index is not None else torch.ones_like(target, dtype=bool)
        target, prediction = target[keep], prediction[keep]
        bad = (target < 0) | (target >= self.num_classes)
        if bad.any():
            values = sorted(set(target[bad].unique().tolist()))[:5]
            raise ValueError(f"{source}: label values {values} are outside 0..{self.num_classes - 1} "
                             f"and are not the ignore value {self.ignore_index}")
        if ((prediction < 0) | (prediction >= self.num_classes)).any():
            raise ValueError(f"{source}: predictions outside 0..{self.num_classes - 1}")
        # One bincount over (t, p) pairs, as torchvision's reference does.
        self.matrix += torch.bincount(target * self.num_classes + prediction,
                                      minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def iou(self) -> Tensor:
        """Per-class IoU (float64); NaN where the class is in neither ground truth nor predictions."""
        m = self.matrix.double()
        intersection = m.diag()
        union = m.sum(0) + m.sum(1) - intersection
        return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))

    def class_accuracy(self) -> Tensor:
        """Per-class recall; NaN for classes absent from the ground truth."""
        m = self.matrix.double()
        total = m.sum(1)
        return torch.where(total > 0, m.diag() / total.clamp(min=1), torch.full_like(total, float("nan")))

    @property
    def miou(self) -> float:
        return _nanmean(self.iou())

    @property
    def pixel_accuracy(self) -> float:
        total = self.matrix.sum().item()
        return self.matrix.diag().sum().item() / total if total else float("nan")

    @property
    def mean_class_accuracy(self) -> float:
        return _nanmean(self.class_accuracy())

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Plain-data report (JSON-ready): the headline numbers and per-class IoU / accuracy."""
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        iou, acc = self.iou().tolist(), self.class_accuracy().tolist()
        return {
            "miou": self.miou, "pixel_accuracy": self.pixel_accuracy, "mean_class_accuracy": self.mean_class_accuracy,
            "per_class": {n: {"iou": _none_if_nan(i), "accuracy": _none_if_nan(a)} for n, i, a in zip(names, iou, acc)},
            "pixels": int(self.matrix.sum()),
        }

    def table(self, class_names: Sequence[str] | None = None) -> str:
        """The per-class IoU table people read after an evaluation."""
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        width = max(len(n) for n in names + ["class"])
        lines = [f"{'class':<{width}}  IoU %   acc %"]
        for name, iou, acc in zip(names, self.iou().tolist(), self.class_accuracy().tolist()):
            lines.append(f"{name:<{width}}  {_pct(iou)}  {_pct(acc)}")
        lines.append(f"{'mean':<{width}}  {_pct(self.miou)}  {_pct(self.mean_class_accuracy)}")
        lines.append(f"pixel accuracy {_pct(self.pixel_accuracy).strip()} %")
        return "\n".join(lines)


def _nanmean(values: Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return valid.mean().item() if valid.numel() else float("nan")


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value


def _pct(value: float) -> str:
    return "    n/a" if value != value else f"{100 * value:7.2f}"
