"""Reading images and label maps the way a segmentation system must: every bad file refused with its name.

- Pillow opens lazily, so ``open()`` proves nothing: we decode fully and report truncated files.
- EXIF orientation is applied (PIL-based loaders usually ignore it, so labels end up rotated).
- Every image mode becomes 3-channel uint8; 16-bit images are *rescaled*, not clipped.
- Label maps keep their indices: palette PNGs are read as indices (never ``convert("L")``), 16-bit labels
  keep values above 255 (no uint8 wrap-around), RGB-coded masks are mapped through an explicit palette.
- Decompression bombs: the pixel count is capped from the header before decoding; decoders are restricted
  to the formats we accept.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
from PIL import Image, ImageOps

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM")
MAX_PIXELS = 100_000_000  # 100 MP: far above any camera frame, far below a 20k × 20k bomb
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageReadError(ValueError):
    """An image or label file that cannot be used; the message starts with the path."""


class TooManyPixels(ImageReadError):
    """More pixels than the cap allows (a decompression bomb, or an image to tile first)."""


def open_verified(path: str | os.PathLike, max_pixels: int = MAX_PIXELS,
                  size_hint: tuple[int, int] | None = None) -> Image.Image:
    """Open, size-check, fully decode and EXIF-orient an image file; one-line errors naming the file.
    ``size_hint`` (W, H) lets a JPEG decode at the smallest power-of-two reduction still at least that size."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return decode(path, str(path), max_pixels, size_hint)


def decode(source: str | os.PathLike | BinaryIO, name: str, max_pixels: int = MAX_PIXELS,
           size_hint: tuple[int, int] | None = None, formats: tuple[str, ...] = IMAGE_FORMATS) -> Image.Image:
    """Decode a path or file object (e.g. an HTTP upload) with the pixel cap checked from the header, before
    any pixel is decoded; ``name`` is what errors call it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap, checked next, decides
            image = Image.open(source, formats=formats)
            width, height = image.size
            if size_hint is not None and image.format == "JPEG":
                image.draft("RGB", size_hint)  # DCT scaling: decodes 1/2, 1/4 or 1/8 of the pixels
                width, height = image.size
            if width * height > max_pixels:
                raise TooManyPixels(f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels:,} "
                                    "(a decompression bomb or an image to tile first)")
            image.load()
            return ImageOps.exif_transpose(image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        raise TooManyPixels(f"{name}: {error}") from None
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(source, (str, os.PathLike)):  # Pillow names the file again; the message names it once
            message = message.replace(f" '{os.fspath(source)}'", "").replace(os.fspath(source), "the file")
        raise ImageReadError(f"{name}: not a readable image ({message})") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode → H×W×3 uint8. 16-bit and 32-bit integer images are rescaled to 0..255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else values.max()
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        span = max(values.max(initial=0) - values.min(initial=0), 1e-12)
        gray = np.round((values - values.min(initial=0)) / span * 255.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")
    if image.mode != "RGB":
        image = image.convert("RGB")
    # One copy out of Pillow, no more: an 80 MP photo is 240 MB, and each extra copy counts in a tiled run.
    return np.array(image, dtype=np.uint8)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS,
               size_hint: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as H×W×3 uint8 RGB, EXIF-oriented. ``size_hint`` (W, H): the size it will be resized to;
    a JPEG much larger than that is decoded at a reduced scale (Pillow's ``draft``), never whole."""
    return to_rgb(open_verified(path, max_pixels, size_hint))


def read_label(path: str | os.PathLike, palette: Sequence[Sequence[int]] | None = None,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A label map as H×W int64 class indices.

    Palette (P) and grayscale (L) PNGs give their stored indices; 16-bit ones keep values above 255.
    RGB(A) masks are mapped through ``palette`` (index i ↔ colour palette[i]); without a palette, or with a
    colour the palette lacks, they are rejected rather than guessed.
    """
    image = open_verified(path, max_pixels)
    if image.mode in ("P", "L", "1", "I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image).astype(np.int64)
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if palette is None:
            raise ImageReadError(f"{path}: an RGB-coded mask; give the dataset's colour palette to map it to "
                                 "class indices (or save masks as palette/grayscale PNGs of indices)")
        return rgb_to_index(rgb, palette, str(path))
    if image.mode == "LA":
        return np.asarray(image.getchannel(0)).astype(np.int64)
    raise ImageReadError(f"{path}: label maps must be palette, grayscale or RGB images, got mode {image.mode}")


def rgb_to_index(rgb: np.ndarray, palette: Sequence[Sequence[int]], source: str = "mask") -> np.ndarray:
    """Map colours to indices; a colour not in ``palette`` is an error naming the colour."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    lookup = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(palette)}
    unique, inverse = np.unique(codes, return_inverse=True)
    unknown = [u for u in unique.tolist() if u not in lookup]
    if unknown:
        colours = [((u >> 16) & 255, (u >> 8) & 255, u & 255) for u in unknown[:3]]
        raise ImageReadError(f"{source}: colours {colours} are not in the palette")
    return np.array([lookup[u] for u in unique.tolist()], dtype=np.int64)[inverse].reshape(codes.shape)
