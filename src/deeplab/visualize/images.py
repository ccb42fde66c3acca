"""Writing pictures: PNG (lossless: label maps, plots) and JPEG (photos and overlays, a tenth of a PNG's size),
both atomically, so a killed run never leaves a half-written image under the final name."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils.files import atomic_write_bytes

JPEG_QUALITY = 90


def encode(image: Image.Image | np.ndarray, format: str, **options) -> bytes:
    """An image (Pillow or H×W[×3] uint8 array) encoded as ``format`` ("PNG", "JPEG") in memory."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (temporary file + rename)."""
    return atomic_write_bytes(path, encode(image, "PNG"))


def save_jpeg(image: Image.Image | np.ndarray, path: str | os.PathLike, quality: int = JPEG_QUALITY) -> Path:
    """Write a JPEG atomically (temporary file + rename)."""
    return atomic_write_bytes(path, encode(image, "JPEG", quality=quality))
