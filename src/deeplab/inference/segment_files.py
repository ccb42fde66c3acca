"""Segment image files into an output folder: what ``deeplab predict`` does, usable from Python too.

Per image ``<stem>``: ``<stem>.png`` (palette PNG whose pixel values are the class indices),
``<stem>_overlay.jpg`` (colours over the photo), optionally ``<stem>_probs.npy`` (C×H×W float16
probabilities) and ``<stem>_areas.json`` (pixels and fraction per class). A file that fails is reported
and the rest continue; existing outputs are never overwritten unless ``force``.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from ..data.io import IMAGE_SUFFIXES, read_image
from ..utils.files import atomic_write, atomic_write_bytes
from ..visualize.images import save_jpeg, save_png
from ..visualize.palette import label_image, overlay
from .predictor import Prediction, Predictor

READ_AHEAD = 8  # images read per predictor call (equal sizes inside are batched together)


@dataclass
class OutputOptions:
    probabilities: bool = False
    areas: bool = False
    overlay: bool = True
    alpha: float = 0.5
    force: bool = False
    palette: Sequence[Sequence[int]] | None = None


@dataclass
class SegmentReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files, folders (their images, sorted, not recursive) and glob patterns → image paths, plus the inputs
    that matched nothing (reported as failures, not raised, so the others still run)."""
    found, missing = [], []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found += images
            if not images:
                missing.append((path, f"folder has no images ({', '.join(IMAGE_SUFFIXES)})"))
        elif path.is_file():
            found.append(path)
        elif any(c in text for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            found += matches
            if not matches:
                missing.append((path, "pattern matched no files"))
        else:
            missing.append((path, "no such file or folder"))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, missing


def output_paths(image: Path, out_dir: Path, options: OutputOptions) -> dict[str, Path]:
    paths = {"labels": out_dir / f"{image.stem}.png"}
    if options.overlay:
        paths["overlay"] = out_dir / f"{image.stem}_overlay.jpg"
    if options.probabilities:
        paths["probabilities"] = out_dir / f"{image.stem}_probs.npy"
    if options.areas:
        paths["areas"] = out_dir / f"{image.stem}_areas.json"
    return paths


def segment_files(predictor: Predictor, images: Sequence[Path], out_dir: str | os.PathLike,
                  options: OutputOptions | None = None, *, progress: bool = True,
                  postprocess: Callable[[np.ndarray, Prediction], np.ndarray] | None = None) -> SegmentReport:
    """Predict every image and write its outputs; ``postprocess(image, prediction) → labels`` (e.g. CRF)."""
    options = options or OutputOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SegmentReport()
    todo = _claim_outputs(images, out_dir, options, report)
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)
    for start in range(0, len(todo), READ_AHEAD):
        chunk, arrays = [], []
        for path in todo[start:start + READ_AHEAD]:
            try:
                arrays.append(read_image(path))
                chunk.append(path)
            except (ValueError, OSError) as error:
                _fail(report, path, str(error), bar)
                bar.update()
        for path, image, prediction in zip(chunk, arrays, predictor.predict(arrays) if arrays else []):
            try:
                labels = postprocess(image, prediction) if postprocess else prediction.labels
                report.written += _write(path, image, labels, prediction, out_dir, options)
            except (ValueError, OSError) as error:
                _fail(report, path, str(error), bar)
            bar.update()
    bar.close()
    return report


def _claim_outputs(images: Sequence[Path], out_dir: Path, options: OutputOptions,
                   report: SegmentReport) -> list[Path]:
    """Refuse up front the images whose outputs exist (unless forced) or collide with another input's."""
    todo, taken = [], {}
    for path in images:
        paths = output_paths(path, out_dir, options)
        clash = taken.get(paths["labels"])
        existing = [p for p in paths.values() if p.exists()]
        if clash is not None:
            report.failed.append((path, f"same output name as {clash} ({paths['labels'].name}); "
                                        "predict them into different folders"))
        elif existing and not options.force:
            report.failed.append((path, f"{existing[0]} exists (pass --force to overwrite)"))
        else:
            taken[paths["labels"]] = path
            todo.append(path)
    return todo


def _write(path: Path, image: np.ndarray, labels: np.ndarray, prediction: Prediction, out_dir: Path,
           options: OutputOptions) -> list[Path]:
    paths = output_paths(path, out_dir, options)
    save_png(label_image(labels, options.palette), paths["labels"])
    if options.overlay:
        save_jpeg(overlay(image, labels, options.palette, alpha=options.alpha), paths["overlay"])
    if options.probabilities:
        if prediction.probabilities is None:
            raise ValueError("probabilities were not kept by the predictor")
        probs = prediction.probabilities.astype(np.float16)
        atomic_write(paths["probabilities"], lambda handle: np.save(handle, probs))
    if options.areas:
        counts = np.bincount(labels.reshape(-1), minlength=prediction.num_classes)
        areas = {name: {"pixels": int(c), "fraction": float(c) / labels.size}
                 for name, c in zip(prediction.class_names, counts.tolist())}
        atomic_write_bytes(paths["areas"], json.dumps({"image": str(path), "height": labels.shape[0],
                                                       "width": labels.shape[1], "classes": areas}, indent=2).encode())
    return list(paths.values())


def _fail(report: SegmentReport, path: Path, message: str, bar: tqdm) -> None:
    report.failed.append((path, message))
    bar.write(f"error: {message if str(path) in message else f'{path}: {message}'}")
