"""Reading and writing video with PyAV: frames as H×W×3 uint8 RGB, upright (a phone's rotation metadata is
applied), and an H.264 writer with the source's frame rate. Damaged or unsupported files raise one-line
``ValueError``s naming the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..utils.optional import require

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


@dataclass(frozen=True)
class VideoInfo:
    width: int      # upright, after rotation
    height: int
    fps: Fraction
    frames: int | None  # None when the container does not say
    rotation: int   # degrees the stored frames are turned to be upright
    seconds: float | None


def _av():
    return require("av", "video")


def _open(path: Path):
    av = _av()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except Exception as error:  # av raises InvalidDataError, FileNotFoundError, ... subclasses of av.FFmpegError
        raise ValueError(f"{path}: not a readable video ({_reason(error)})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: has no video stream")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count and rotation, from the container (without decoding every frame)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        frame = next(container.decode(stream), None)
        if frame is None:
            raise ValueError(f"{path}: its video stream has no frames")
        rotation = _rotation(frame)
        width, height = (frame.height, frame.width) if rotation % 180 else (frame.width, frame.height)
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        seconds = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / 1e6 if container.duration else None)
        return VideoInfo(width, height, Fraction(fps), stream.frames or None, rotation, seconds)
    except StopIteration:
        raise ValueError(f"{path}: its video stream has no frames") from None
    finally:
        container.close()


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames, upright, as H×W×3 uint8 RGB."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield _upright(frame.to_ndarray(format="rgb24"), _rotation(frame))
    except (ValueError, OSError):
        raise
    except Exception as error:  # a damaged packet half-way
        raise ValueError(f"{path}: damaged video ({_reason(error)})") from None
    finally:
        container.close()


def _rotation(frame) -> int:
    """Degrees (0, 90, 180, 270) to turn the stored frame clockwise to show it upright."""
    return int(round(-float(getattr(frame, "rotation", 0) or 0))) % 360


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90))) if rotation else image


class VideoWriter:
    """H.264 (yuv420p; yuv444p for odd sizes, which 4:2:0 cannot hold) at the given frame rate."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction, quality: int = 20) -> None:
        av = _av()
        self.path = Path(path)
        self.container = av.open(str(self.path), "w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if codec == "libx264":
            self.stream.options = {"crf": str(quality), "preset": "veryfast"}
        self.av = av

    def write(self, image: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
