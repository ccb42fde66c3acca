"""Label maps as pictures: the VOC colour map, palette label images, colourised labels, overlays on the photo,
and panels side by side.

Label maps become palette ("P") images: the pixel values are the class indices (so a saved PNG loads back as
labels) and the palette makes them viewable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

Palette = Sequence[Sequence[int]]
IGNORE_COLOUR = (255, 255, 255)


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (bit-interleaved class index), used when a dataset brings no palette."""
    colours = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return colours


def _full_palette(palette: Palette | None, ignore_index: int | None = 255) -> np.ndarray:
    table = np.array(voc_colormap(256), dtype=np.uint8)
    if palette is not None:
        table[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]
    if ignore_index is not None and 0 <= ignore_index < 256:
        table[ignore_index] = IGNORE_COLOUR
    return table


def label_image(labels: np.ndarray, palette: Palette | None = None, ignore_index: int | None = 255) -> Image.Image:
    """H×W class indices (< 256) → a palette PNG image whose pixel values are the indices."""
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("palette PNGs hold class indices 0..255; save larger label maps as 16-bit PNG")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(_full_palette(palette, ignore_index).reshape(-1).tolist())
    return image


def colorize(labels: np.ndarray, palette: Palette | None = None, ignore_index: int | None = 255) -> np.ndarray:
    """H×W class indices → H×W×3 uint8 colours."""
    return _full_palette(palette, ignore_index)[np.clip(labels, 0, 255).astype(np.int64)]


def overlay(image: np.ndarray, labels: np.ndarray, palette: Palette | None = None, *, alpha: float = 0.5,
            ignore_index: int | None = 255, band_rows: int = 512) -> np.ndarray:
    """Blend class colours over the photo (``alpha`` = colour weight). Ignore pixels and classes coloured pure
    black (VOC's background) keep the photo, so the scene stays visible around the objects. Computed
    ``band_rows`` rows at a time, so the float arithmetic never holds a whole 80 MP image."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha!r}")
    table = _full_palette(palette, ignore_index)
    out = np.empty(image.shape, dtype=np.uint8)
    for top in range(0, image.shape[0], band_rows):
        rows = slice(top, top + band_rows)
        band, classes = image[rows], labels[rows]
        colours = table[np.clip(classes, 0, 255).astype(np.int64)]
        blended = (1 - alpha) * band.astype(np.float32) + alpha * colours.astype(np.float32)
        keep = ~colours.any(axis=-1)
        if ignore_index is not None:
            keep |= classes == ignore_index
        blended[keep] = band[keep]
        out[rows] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out


def side_by_side(*panels: np.ndarray, gap: int = 4) -> np.ndarray:
    """Panels next to each other with a white gap (e.g. photo | truth | prediction); shorter panels are padded
    with white at the bottom to the tallest one's height."""
    height = max(p.shape[0] for p in panels)
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate([x for p in padded for x in (p, spacer)][:-1], axis=1)
