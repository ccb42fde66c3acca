"""Confusion-matrix heatmaps: :func:`plot_confusion_matrix` (rows = true class, columns = predicted),
normalised by row, column or total, with class names on both axes and a colour scale."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..visualize import save_png
from .drawing import (AXIS, BLUES, MUTED, TEXT, WHITE, _draw_text, _fit, _line_height, _rotated_text, _text_size,
                      font, format_ticks, nice_ticks)

def _colormap(values: np.ndarray, stops: Sequence[Sequence[int]] = BLUES) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB by linear interpolation between ``stops``."""
    table = np.asarray(stops, dtype=np.float64)
    position = np.clip(values, 0, 1) * (len(table) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(table) - 2)
    frac = (position - low)[..., None]
    return np.round(table[low] * (1 - frac) + table[low + 1] * frac).astype(np.uint8)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, *,
                          normalize: str | None = "true", title: str | None = None) -> Path:
    """Heatmap of a C×C confusion matrix (rows = true class, columns = predicted) as a PNG; returns the path.

    ``normalize``: ``"true"`` (each row sums to 100 %, the default: recall on the diagonal), ``"pred"``
    (columns), ``"all"`` (the whole matrix) or ``None`` (raw counts, coloured relative to the largest).
    Rows (columns for ``"pred"``) without any pixels are left blank. Cell values are written when C ≤ 25.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be C×C, got shape {counts.shape}")
    c = counts.shape[0]
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for a {c}×{c} matrix")
    if normalize not in ("true", "pred", "all", None):
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")

    blank = np.zeros_like(counts, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "true":
            sums = counts.sum(axis=1, keepdims=True)
            values = 100 * counts / sums
            blank |= np.broadcast_to(sums == 0, counts.shape)
        elif normalize == "pred":
            sums = counts.sum(axis=0, keepdims=True)
            values = 100 * counts / sums
            blank |= np.broadcast_to(sums == 0, counts.shape)
        elif normalize == "all":
            total = counts.sum()
            values = 100 * counts / total if total else np.zeros_like(counts)
            blank[:] = total == 0
        else:
            values = counts
    scale_max = 100.0 if normalize else max(1.0, float(np.nanmax(counts)) if counts.size else 1.0)
    if title is None:
        title = {"true": "confusion matrix (row-normalised, %)", "pred": "confusion matrix (column-normalised, %)",
                 "all": "confusion matrix (% of all pixels)", None: "confusion matrix (pixel counts)"}[normalize]

    # Sizes: cells shrink with more classes; text only when it fits.
    cell = int(np.clip(round(640 / max(c, 1)), 10, 52))
    name_font = font(int(np.clip(cell - 4, 9, 14)))
    value_font = font(int(np.clip(cell * 0.32, 8, 13)))
    title_font, axis_font, tick_font = font(18), font(14), font(12)
    write_values = c <= 25
    names = [_fit(str(n), name_font, 130) for n in class_names]
    name_h = _line_height(name_font)
    name_w = max([_text_size(n, name_font)[0] for n in names] + [1])

    # x labels at 45° (a label of width w reaches w/√2 down and left of its anchor) while neighbours keep
    # apart, else vertical, and only every stride-th one when even that is too dense.
    angle = 45 if cell / math.sqrt(2) >= name_h + 1 else 90
    stride = 1 if angle == 45 else max(1, math.ceil((name_h + 1) / cell))
    diag = (name_w + name_h) / math.sqrt(2) if angle == 45 else name_w + 4
    axis_h = _line_height(axis_font)
    left = 16 + axis_h + 10 + name_w + 8
    if angle == 45:  # the first x label must not leave the image
        left = max(left, int(diag - cell / 2) + 16)
    top = 16 + _line_height(title_font) + 16
    grid = c * cell
    bottom_labels = top + grid + 6
    height = int(bottom_labels + diag + 12 + axis_h + 16)
    bar_x = left + grid + 24
    bar_w = 16
    scale_labels = format_ticks(nice_ticks(0, scale_max, 5)) if normalize else None
    bar_ticks = nice_ticks(0, scale_max, 5)
    bar_ticks = [t for t in bar_ticks if t <= scale_max + 1e-9]
    bar_labels = format_ticks(bar_ticks) if scale_labels is None else scale_labels[: len(bar_ticks)]
    width = int(bar_x + bar_w + 8 + max(_text_size(t, tick_font)[0] for t in bar_labels) + 20)
    width = max(width, _text_size(title, title_font)[0] + 32)

    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    _draw_text(draw, (width / 2, 16), title, title_font, TEXT, "ma")

    # Cells.
    colours = _colormap(np.nan_to_num(values / scale_max, nan=0.0))
    for i in range(c):
        for j in range(c):
            x, y = left + j * cell, top + i * cell
            if blank[i, j]:
                continue
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=tuple(int(v) for v in colours[i, j]))
    if c <= 60:  # thin white separators between cells
        for k in range(1, c):
            draw.line([(left + k * cell, top), (left + k * cell, top + grid - 1)], fill=WHITE, width=1)
            draw.line([(left, top + k * cell), (left + grid - 1, top + k * cell)], fill=WHITE, width=1)
    draw.rectangle([left - 1, top - 1, left + grid, top + grid], outline=(200, 200, 200), width=1)

    if write_values:
        for i in range(c):
            if normalize == "true" and blank[i].all():
                _draw_text(draw, (left + grid / 2, top + i * cell + cell / 2), "no pixels", value_font, MUTED, "mm")
                continue
            for j in range(c):
                if blank[i, j] or counts[i, j] == 0:
                    continue
                v = values[i, j]
                text = _cell_text(v, normalize is not None)
                if _text_size(text, value_font)[0] > cell - 2:
                    continue
                dark = v / scale_max > 0.5
                _draw_text(draw, (left + j * cell + cell / 2, top + i * cell + cell / 2), text, value_font,
                           WHITE if dark else TEXT, "mm")

    # Class names: rows on the left, columns below at 45°.
    row_stride = max(1, math.ceil((name_h - 1) / cell))
    for i, name in enumerate(names):
        if i % row_stride:
            continue
        _draw_text(draw, (left - 8, top + i * cell + cell / 2), name, name_font, TEXT, "rm")
    for j, name in enumerate(names):
        if j % stride:
            continue
        layer = _rotated_text(name, name_font, angle)
        centre = left + j * cell + cell / 2
        x = centre + 2 - layer.width if angle == 45 else centre - layer.width / 2
        image.paste(layer, (round(x), bottom_labels), layer)
    _draw_text(draw, (left + grid / 2, height - 14), "predicted class", axis_font, TEXT, "md")
    layer = _rotated_text("true class", axis_font, 90)
    image.paste(layer, (16, round(top + grid / 2 - layer.height / 2)), layer)

    # Colour scale.
    bar_h = grid
    ramp = _colormap(np.linspace(1, 0, bar_h))[:, None, :].repeat(bar_w, axis=1)
    image.paste(Image.fromarray(ramp), (bar_x, top))
    draw.rectangle([bar_x - 1, top - 1, bar_x + bar_w, top + bar_h], outline=(200, 200, 200), width=1)
    for t, label in zip(bar_ticks, bar_labels):
        y = top + bar_h - 1 - t / scale_max * (bar_h - 1)
        draw.line([(bar_x + bar_w, y), (bar_x + bar_w + 4, y)], fill=AXIS, width=1)
        _draw_text(draw, (bar_x + bar_w + 7, y), label, tick_font, MUTED, "lm")
    return save_png(image, path)


def _cell_text(value: float, percent: bool) -> str:
    if not percent:
        return _format_count(value)
    if value >= 99.5 and value < 100:
        return ">99"
    if 0 < value < 0.5:
        return "<1"
    return f"{value:.0f}"


def _format_count(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.0f}"
