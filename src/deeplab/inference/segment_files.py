"""Segment image files into an output folder: what ``deeplab predict`` does, usable from Python too.

Per image ``<stem>``: ``<stem>.png`` (palette PNG whose pixel values are the class indices),
``<stem>_overlay.jpg`` (colours over the photo), optionally ``<stem>_probs.npy`` (C×H×W float16
probabilities) and ``<stem>_areas.json`` (pixels and fraction per class).

- An image's outputs appear together: they are written to temporary files and renamed into place at the end,
  the label PNG last, so a killed run leaves each image finished (every output) or unfinished.
- Existing outputs are never overwritten unless ``force``; ``skip_existing`` skips the finished images and
  redoes the unfinished ones — a re-run after a crash finishes the job.
- A file that fails is reported (``on_error``) and the rest continue.
- Images above the Predictor's tiling budget stream through windows (memory bounded by the tile and the image
  width; probabilities, if asked, go straight to disk); the others are read a few at a time and batched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..data.io import read_image
from ..utils.files import OutputGroup
from ..visualize.images import encode
from ..visualize.palette import label_image, overlay
from .inputs import expand_inputs
from .predictor import Prediction, Predictor
from .streaming import open_probability_file

READ_AHEAD = 8  # small images read per predictor call (equal sizes inside are batched together)
Postprocess = Callable[[np.ndarray, Prediction], np.ndarray]


@dataclass
class OutputOptions:
    probabilities: bool = False
    areas: bool = False
    overlay: bool = True
    alpha: float = 0.5
    force: bool = False
    skip_existing: bool = False
    palette: Sequence[Sequence[int]] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"the overlay alpha must be in [0, 1], got {self.alpha!r}")
        if self.force and self.skip_existing:
            raise ValueError("choose --force (redo everything) or --skip-existing (finish what is missing), not both")


@dataclass
class SegmentReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # finished before (skip_existing)
    failed: list[tuple[Path, str]] = field(default_factory=list)


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
                  postprocess: Postprocess | None = None,
                  on_error: Callable[[Path, str], None] | None = None) -> SegmentReport:
    """Predict every image and write its outputs; ``postprocess(image, prediction) → labels`` (e.g. CRF);
    ``on_error(path, message)`` hears about each failure as it happens (they are also in the report)."""
    options = options or OutputOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SegmentReport()

    def fail(path: Path, message: str) -> None:
        message = message if str(path) in message else f"{path}: {message}"
        report.failed.append((path, message))
        if on_error is not None:
            on_error(path, message)

    todo = _claim_outputs(images, out_dir, options, report, fail)
    with tqdm(total=len(todo), desc="predict", unit="img", disable=not progress) as bar:
        for chunk in _read(todo, predictor, fail, bar):
            for path, image, prediction, group in _predict(predictor, chunk, out_dir, options, fail):
                try:
                    labels = _postprocess(postprocess, image, prediction, streamed=group is not None)
                    report.written += _write(path, image, labels, prediction, out_dir, options, group)
                except (ValueError, OSError) as error:
                    fail(path, str(error))
                finally:
                    if group is not None:
                        group.abort()  # the streamed probabilities' temporary file; a no-op after a commit
                bar.update()
    return report


def _claim_outputs(images: Sequence[Path], out_dir: Path, options: OutputOptions, report: SegmentReport,
                   fail: Callable[[Path, str], None]) -> list[Path]:
    """Refuse up front the images whose outputs exist (unless forced or finishing) or collide with another
    input's; with ``skip_existing`` the finished ones (every output there) are skipped."""
    todo, taken = [], {}
    for path in images:
        paths = output_paths(path, out_dir, options)
        clash = taken.get(paths["labels"])
        existing = [p for p in paths.values() if p.exists()]
        if clash is not None:
            fail(path, f"same output name as {clash} ({paths['labels'].name}); predict them into different folders")
        elif options.skip_existing and len(existing) == len(paths):
            report.skipped.append(path)
        elif existing and not (options.force or options.skip_existing):
            fail(path, f"{existing[0]} exists (pass --force to overwrite, or --skip-existing to finish a run)")
        else:
            taken[paths["labels"]] = path
            todo.append(path)
    return todo


def _read(todo: list[Path], predictor: Predictor, fail, bar: tqdm) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Chunks of read images: up to READ_AHEAD small ones, or one image the predictor streams (huge images
    are never held several at a time)."""
    chunk: list[tuple[Path, np.ndarray]] = []
    for path in todo:
        try:
            image = read_image(path)
        except (ValueError, OSError) as error:
            fail(path, str(error))
            bar.update()
            continue
        try:
            streamed = predictor.streams(image)
        except ValueError as error:  # multi-scale above the tiling budget
            fail(path, str(error))
            bar.update()
            continue
        if streamed:
            yield [(path, image)]
            continue
        chunk.append((path, image))
        if len(chunk) == READ_AHEAD:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _predict(predictor: Predictor, chunk: list[tuple[Path, np.ndarray]], out_dir: Path, options: OutputOptions,
             fail) -> Iterator[tuple[Path, np.ndarray, Prediction, OutputGroup | None]]:
    """(path, image, prediction, the output group a streamed image's probabilities are already in)."""
    if len(chunk) == 1 and predictor.streams(chunk[0][1]):
        path, image = chunk[0]
        group = OutputGroup()
        probabilities = None
        if options.probabilities:  # straight to a temporary .npy beside the target, renamed in _write
            target = output_paths(path, out_dir, options)["probabilities"]
            probabilities = open_probability_file(group.path_for(target), predictor.num_classes, *image.shape[:2])
        try:
            labels = predictor.predict_streamed(image, probabilities)
            if probabilities is not None:
                probabilities.flush()
        except (ValueError, OSError) as error:
            group.abort()
            fail(path, str(error))
            return
        yield path, image, Prediction(labels, None, predictor.class_names_for(predictor.num_classes)), group
        return
    for (path, image), prediction in zip(chunk, predictor.predict([image for _, image in chunk])):
        yield path, image, prediction, None


def _postprocess(postprocess: Postprocess | None, image: np.ndarray, prediction: Prediction, *,
                 streamed: bool) -> np.ndarray:
    if postprocess is None:
        return prediction.labels
    if streamed:
        raise ValueError("the dense CRF needs the whole probability map in memory; this image is above the tiling "
                         "budget (predict it without --crf, or raise --tile-above)")
    return postprocess(image, prediction)


def _write(path: Path, image: np.ndarray, labels: np.ndarray, prediction: Prediction, out_dir: Path,
           options: OutputOptions, group: OutputGroup | None) -> list[Path]:
    """Every output of one image into temporary files, then all renamed into place, the label PNG last."""
    paths = output_paths(path, out_dir, options)
    group = group or OutputGroup()
    with group:
        group.write_bytes(paths["labels"], encode(label_image(labels, options.palette), "PNG"))
        if options.overlay:
            group.write_bytes(paths["overlay"], encode(overlay(image, labels, options.palette, alpha=options.alpha),
                                                       "JPEG", quality=90))
        if options.probabilities and paths["probabilities"] not in group.pending:
            if prediction.probabilities is None:
                raise ValueError("probabilities were not kept by the predictor")
            with open(group.path_for(paths["probabilities"]), "wb") as handle:
                np.save(handle, prediction.probabilities.astype(np.float16))
        if options.areas:
            counts = np.bincount(labels.reshape(-1), minlength=prediction.num_classes)
            areas = {name: {"pixels": int(c), "fraction": float(c) / labels.size}
                     for name, c in zip(prediction.class_names, counts.tolist())}
            group.write_bytes(paths["areas"], json.dumps({"image": str(path), "height": labels.shape[0],
                                                          "width": labels.shape[1], "classes": areas},
                                                         indent=2).encode())
        return group.commit(last=paths["labels"])


__all__ = ["OutputOptions", "SegmentReport", "expand_inputs", "output_paths", "segment_files"]
