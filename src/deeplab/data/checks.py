"""The pre-flight dataset scan, run by ``deeplab check-data`` and before training, so bad files fail in seconds.

Every image and mask is read once, the way training will read it, and each problem is listed with its file:
unreadable/truncated/0-byte/bomb files, RGB masks without a palette, image/mask size mismatches, label values
outside the classes that are not the ignore value (16-bit ones included), 0/255 binary masks. EXIF rotation is
reported as a note. The scan also counts class pixels and suggests median-frequency class weights (SegNet,
Badrinarayanan et al. 2017: ``w_c = median_k(f_k) / f_c``, ``f_c`` = pixels of class c / pixels of the images
where c is present).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from .datasets import SegmentationDataset
from .io import read_image

_EXIF_ORIENTATION = 0x0112
_SHOW_VALUES = 5  # how many bad label values a message lists


class DataCheckError(ValueError):
    """The dataset has bad files; the message is the scan report."""


@dataclass
class ScanReport:
    dataset: str
    class_names: list[str]
    ignore_index: int
    num_samples: int
    problems: list[tuple[str, str]] = field(default_factory=list)   # (path, message): errors
    notes: list[tuple[str, str]] = field(default_factory=list)      # (path, message): information only
    histogram: np.ndarray | None = None   # pixels per class, int64
    present_pixels: np.ndarray | None = None  # pixels of the images where each class occurs
    ignore_pixels: int = 0
    good_indices: list[int] = field(default_factory=list)
    skip_bad: bool = False
    sample_classes: list[np.ndarray | None] = field(default_factory=list)  # per sample: which classes occur

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def skipped(self) -> int:
        """Samples left out of training: the bad ones, when asked to skip them (none otherwise — then they
        stop training instead)."""
        return self.num_samples - len(self.good_indices) if self.skip_bad else 0

    @property
    def usable(self) -> bool:
        """Training may go on: no problems, or the user asked to skip bad files and some are left."""
        return self.ok or (self.skip_bad and bool(self.good_indices))

    def images_with(self, classes: list[int]) -> list[int]:
        """Indices (into the good samples, in order) of the images where any of ``classes`` occurs."""
        return [k for k, index in enumerate(self.good_indices)
                if self.sample_classes[index] is not None and self.sample_classes[index][classes].any()]

    def class_weights(self) -> list[float | None]:
        """Median-frequency balancing weights; ``None`` for classes that never occur."""
        freq = np.full(len(self.class_names), np.nan)
        present = self.present_pixels > 0
        freq[present] = self.histogram[present] / self.present_pixels[present]
        median = np.median(freq[present]) if present.any() else np.nan
        return [None if np.isnan(f) else float(median / f) for f in freq]

    def to_dict(self) -> dict[str, Any]:
        total = int(self.histogram.sum()) + self.ignore_pixels
        return {
            "dataset": self.dataset, "ok": self.ok, "samples": self.num_samples, "skipped": self.skipped,
            "problems": [{"path": p, "message": m} for p, m in self.problems],
            "notes": [{"path": p, "message": m} for p, m in self.notes],
            "classes": {name: {"pixels": int(n), "fraction": n / total if total else None, "weight": w}
                        for name, n, w in zip(self.class_names, self.histogram.tolist(), self.class_weights())},
            "ignore_pixels": self.ignore_pixels, "good_indices": self.good_indices,
        }

    def format(self) -> str:
        lines = [f"dataset {self.dataset}: {self.num_samples} samples, {len(self.class_names)} classes, "
                 f"ignore value {self.ignore_index}"]
        total = int(self.histogram.sum()) + self.ignore_pixels
        width = max(len(n) for n in self.class_names + ["ignore"])
        lines.append(f"{'class':<{width}}  {'pixels':>13}  {'share':>7}  suggested weight")
        for name, count, weight in zip(self.class_names, self.histogram.tolist(), self.class_weights()):
            share = f"{100 * count / total:6.2f}%" if total else "    n/a"
            lines.append(f"{name:<{width}}  {count:>13,}  {share}  {'absent' if weight is None else f'{weight:.4f}'}")
        if total:
            lines.append(f"{'ignore':<{width}}  {self.ignore_pixels:>13,}  {100 * self.ignore_pixels / total:6.2f}%")
        absent = [n for n, w in zip(self.class_names, self.class_weights()) if w is None]
        if absent:
            lines.append(f"classes never seen: {', '.join(absent)}")
        lines.append("weights: median-frequency balancing (SegNet); pass them to the loss to counter imbalance")
        lines += [f"note: {path}: {message}" for path, message in self.notes]
        lines += [f"error: {path}: {message}" for path, message in self.problems]
        bad_files = len({p for p, _ in self.problems})
        if self.ok:
            lines.append("ok: no problems found")
        elif self.skip_bad:
            lines.append(f"{len(self.problems)} problem(s) in {bad_files} file(s); skipping {self.skipped} bad "
                         f"sample(s), {len(self.good_indices)} left")
        else:
            lines.append(f"{len(self.problems)} problem(s) in {bad_files} file(s); fix them, or pass --skip-bad "
                         "to train without those samples")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike) -> None:
        from ..utils.files import atomic_write_bytes
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())


@dataclass
class _Result:
    problems: list[tuple[str, str]]
    notes: list[tuple[str, str]]
    counts: np.ndarray | None = None  # per-class pixels of this sample
    ignore: int = 0
    size: int = 0


def _message(error: Exception, path: Path) -> str:
    text = str(error)
    return text[len(str(path)) + 2:] if text.startswith(f"{path}: ") else text


def _orientation(path: Path) -> int:
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1


def _check_sample(dataset: SegmentationDataset, index: int, num_classes: int) -> _Result:
    image_path, mask_path = dataset.pairs[index]
    ignore = dataset.info.ignore_index
    result = _Result([], [])
    image = raw = label = None
    try:
        image = read_image(image_path)
        orientation = _orientation(image_path)
        if orientation not in (0, 1):
            result.notes.append((str(image_path), f"EXIF orientation {orientation} applied: read as "
                                                  f"{image.shape[1]}x{image.shape[0]} (W x H)"))
    except (ValueError, OSError) as error:
        result.problems.append((str(image_path), _message(error, image_path)))
    if mask_path is None:
        return result
    try:
        raw, label = dataset.load_label(mask_path)
    except (ValueError, OSError) as error:
        result.problems.append((str(mask_path), _message(error, mask_path)))
        return result
    if image is not None and image.shape[:2] != label.shape:
        hint = ""
        if _orientation(image_path) not in (0, 1) and image.shape[:2] == label.shape[::-1]:
            hint = " (the image has an EXIF rotation; the mask seems drawn on the unrotated pixels)"
        result.problems.append((str(mask_path), f"size {label.shape[1]}x{label.shape[0]} differs from image "
                                                f"{image_path} {image.shape[1]}x{image.shape[0]} (W x H){hint}"))
    values = np.unique(raw)
    if len(values) == 2 and values.tolist() == [0, 255] and 255 not in dataset.info.label_map \
            and not dataset.info.ignore_declared:
        result.problems.append((str(mask_path), "looks like a binary 0/255 mask (values only 0 and 255): to train "
                                                "255 as class 1 add --label-map 255:1 (config: data.label_map: "
                                                "{255: 1}); if 255 means ignore, add --ignore-index 255"))
        return result
    bad = (label < 0) | ((label >= num_classes) & (label != ignore))
    if bad.any():
        found = np.unique(raw[bad])
        listed = ", ".join(map(str, found[:_SHOW_VALUES].tolist())) + (" ..." if len(found) > _SHOW_VALUES else "")
        wide = " (values above 255: a 16-bit mask)" if found.max() > 255 else ""
        result.problems.append((str(mask_path), f"label values {{{listed}}} in {int(bad.sum()):,} pixels are outside "
                                                f"0..{num_classes - 1} and are not the ignore value {ignore}{wide}"))
        return result
    valid = label[label != ignore]
    result.counts = np.bincount(valid, minlength=num_classes)[:num_classes].astype(np.int64)
    result.ignore, result.size = int(label.size - valid.size), int(label.size)
    if valid.size == 0:
        result.notes.append((str(mask_path), "every pixel is the ignore value: this sample adds nothing to training"))
    return result


def scan_dataset(dataset: SegmentationDataset, num_classes: int | None = None, *, skip_bad: bool = False,
                 progress: bool = True, workers: int | None = None) -> ScanReport:
    """Read every file once and report problems, notes, the class histogram and suggested weights.

    Decoding releases the GIL, so ``workers`` threads (default: up to 8) read files in parallel; results are
    collected in dataset order, so the report does not depend on the thread count.
    """
    num_classes = dataset.info.num_classes if num_classes is None else num_classes
    report = ScanReport(dataset.info.name, list(dataset.info.classes)[:num_classes], dataset.info.ignore_index,
                        len(dataset), skip_bad=skip_bad)
    report.class_names += [str(i) for i in range(len(report.class_names), num_classes)]
    report.histogram = np.zeros(num_classes, dtype=np.int64)
    report.present_pixels = np.zeros(num_classes, dtype=np.int64)
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(dataset), desc="check-data", unit="sample", disable=not progress) as bar:
        for index, result in enumerate(pool.map(lambda i: _check_sample(dataset, i, num_classes), range(len(dataset)))):
            bar.update()
            report.problems += result.problems
            report.notes += result.notes
            report.sample_classes.append(None if result.counts is None else result.counts > 0)
            if result.problems:
                continue
            report.good_indices.append(index)
            if result.counts is not None:
                report.histogram += result.counts
                report.present_pixels[result.counts > 0] += result.size
                report.ignore_pixels += result.ignore
    return report


def check_dataset(dataset: SegmentationDataset, num_classes: int | None = None, *, skip_bad: bool = False,
                  progress: bool = True, log=print) -> tuple[SegmentationDataset, ScanReport]:
    """The pre-training gate: scan, print the report, and raise ``DataCheckError`` on problems unless asked
    to skip bad files; returns the dataset to train on (the good samples) and the report."""
    report = scan_dataset(dataset, num_classes, skip_bad=skip_bad, progress=progress)
    log(report.format())
    if not report.usable:
        raise DataCheckError(f"dataset {dataset.info.name}: {len(report.problems)} problem(s) found before "
                             "training (listed above); fix them or skip bad files")
    return (dataset if report.ok else dataset.subset(report.good_indices)), report
