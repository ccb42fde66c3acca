"""Segment a video: frames decoded, predicted in batches, optionally smoothed over time, written as an overlay
video (the source's frame rate and size) and, if asked, one label PNG per frame.

Temporal smoothing is an exponential moving average of the class probabilities, ``p̄_t = w·p̄_{t−1} + (1−w)·p_t``,
``w`` the weight of the past (0: none). It trades flicker — the share of pixels whose label changes between
consecutive frames, ``flicker()`` — against lag on moving objects; ``benchmarks/video_smoothing.py`` measures
both on CamVid's validation clip.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from ..inference.predictor import Predictor
from ..utils.files import OutputGroup
from ..visualize.images import encode
from ..visualize.palette import label_image, overlay
from .io import VideoWriter, probe, read_frames


class TemporalSmoother:
    """Exponential moving average of C×H×W probabilities; ``weight`` of the past in [0, 1)."""

    def __init__(self, weight: float) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"the smoothing weight must be in [0, 1), got {weight!r}")
        self.weight, self.state = weight, None

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        if self.weight == 0.0 or self.state is None or self.state.shape != probabilities.shape:
            self.state = probabilities.astype(np.float32, copy=True)
        else:
            self.state = self.weight * self.state + (1.0 - self.weight) * probabilities
        return self.state


def flicker(previous: np.ndarray | None, labels: np.ndarray) -> float | None:
    """The share of pixels whose label changed since the previous frame (None for the first frame)."""
    return None if previous is None else float((previous != labels).mean())


@dataclass
class VideoResult:
    frames: int
    overlay: Path
    frame_pngs: list[Path] = field(default_factory=list)
    flicker: float = float("nan")  # mean over consecutive frame pairs


def label_stream(predictor: Predictor, frames: Iterable[np.ndarray], *, smooth: float = 0.0,
                 batch_size: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame, labels) for every frame, predicted ``batch_size`` frames at a time, smoothed over time."""
    smoother = TemporalSmoother(smooth)
    batch: list[np.ndarray] = []
    for frame in itertools.chain(frames, [None]):
        if frame is not None:
            batch.append(frame)
            if len(batch) < batch_size:
                continue
        if not batch:
            break
        for image, prediction in zip(batch, predictor.predict(batch)):
            probabilities = smoother(prediction.probabilities) if smooth else prediction.probabilities
            labels = probabilities.argmax(0) if probabilities is not None else prediction.labels
            yield image, labels.astype(np.uint8 if prediction.num_classes <= 256 else np.int16)
        batch = []


def segment_video(predictor: Predictor, path: str | os.PathLike, out_dir: str | os.PathLike, *, smooth: float = 0.0,
                  frame_pngs: bool = False, palette=None, alpha: float = 0.5, batch_size: int = 4,
                  progress: bool = True, max_frames: int | None = None,
                  on_frame: Callable[[int, np.ndarray], None] | None = None) -> VideoResult:
    """``<stem>_overlay.mp4`` (and ``<stem>_frames/<n>.png`` with ``frame_pngs``) in ``out_dir``, all appearing
    together at the end. ``max_frames`` refuses longer videos before any work; ``on_frame(index, labels)`` sees
    every frame's labels (e.g. to score them)."""
    path, out_dir = Path(path), Path(out_dir)
    info = probe(path)
    if max_frames is not None and info.frames is not None and info.frames > max_frames:
        raise ValueError(f"{path}: {info.frames} frames, more than the {max_frames} allowed")
    group = OutputGroup()
    target = out_dir / f"{path.stem}_overlay.mp4"
    pngs: list[Path] = []
    changes: list[float] = []
    previous = None
    with group, VideoWriter(group.path_for(target), info.width, info.height, info.fps) as writer, \
            tqdm(total=info.frames, desc=path.name, unit="frame", disable=not progress) as bar:
        for index, (frame, labels) in enumerate(label_stream(predictor, read_frames(path), smooth=smooth,
                                                             batch_size=batch_size)):
            if max_frames is not None and index >= max_frames:
                raise ValueError(f"{path}: longer than the {max_frames} frames allowed")
            writer.write(overlay(frame, labels, palette, alpha=alpha))
            if frame_pngs:
                png = out_dir / f"{path.stem}_frames" / f"{index:06d}.png"
                group.write_bytes(png, encode(label_image(labels, palette), "PNG"))
                pngs.append(png)
            change = flicker(previous, labels)
            if change is not None:
                changes.append(change)
            if on_frame is not None:
                on_frame(index, labels)
            previous = labels
            bar.update()
    group.commit(last=target)
    return VideoResult(len(changes) + (previous is not None), target, pngs,
                       float(np.mean(changes)) if changes else float("nan"))
