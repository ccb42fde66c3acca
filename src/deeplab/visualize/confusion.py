"""Confusion-matrix heatmaps: :func:`plot_confusion_matrix` (rows = true class, columns = predicted),
normalised by row, column or total, with class names on both axes and a colour scale."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .drawing import (AXIS, BLUES, MUTED, TEXT, WHITE, Font, _draw_text, _fit, _line_height, _rotated_text,
                      _text_size, font, format_ticks, nice_ticks)
from .images import save_png


def _colormap(values: np.ndarray, stops: Sequence[Sequence[int]] = BLUES) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB by linear interpolation between ``stops``."""
    table = np.asarray(stops, dtype=np.float64)
    position = np.clip(values, 0, 1) * (len(table) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(table) - 2)
    frac = (position - low)[..., None]
    return np.round(table[low] * (1 - frac) + table[low + 1] * frac).astype(np.uint8)


TITLES = {"true": "confusion matrix (row-normalised, %)", "pred": "confusion matrix (column-normalised, %)",
          "all": "confusion matrix (% of all pixels)", None: "confusion matrix (pixel counts)"}
MAX_CLASSES_WITH_VALUES = 25  # cell values are written up to this many classes
MAX_CLASSES_WITH_SEPARATORS = 60


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
    if len(class_names) != counts.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {counts.shape[0]}×{counts.shape[0]} matrix")
    if normalize not in TITLES:
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    values, blank, scale_max = _normalised(counts, normalize)
    layout = _Layout.plan(class_names, TITLES[normalize] if title is None else title, normalize, scale_max)
    image = Image.new("RGB", (layout.width, layout.height), WHITE)
    draw = ImageDraw.Draw(image)
    _draw_text(draw, (layout.width / 2, 16), layout.title, layout.title_font, TEXT, "ma")
    _draw_cells(draw, values / scale_max, blank, layout)
    if layout.classes <= MAX_CLASSES_WITH_VALUES:
        _draw_values(draw, counts, values, blank, layout, normalize, scale_max)
    _draw_names(image, draw, layout)
    _draw_scale(image, draw, layout, scale_max)
    return save_png(image, path)


def _normalised(counts: np.ndarray, normalize: str | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(the values to show, cells to leave blank, the value of a full-colour cell)."""
    blank = np.zeros_like(counts, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize in ("true", "pred"):
            sums = counts.sum(axis=1 if normalize == "true" else 0, keepdims=True)
            values = 100 * counts / sums
            blank |= np.broadcast_to(sums == 0, counts.shape)
        elif normalize == "all":
            total = counts.sum()
            values = 100 * counts / total if total else np.zeros_like(counts)
            blank[:] = total == 0
        else:
            values = counts
    scale_max = 100.0 if normalize else max(1.0, float(np.nanmax(counts)) if counts.size else 1.0)
    return values, blank, scale_max


@dataclass
class _Layout:
    """Where everything goes: cells shrink with more classes, x labels turn from 45° to vertical (and thin
    out) when they would collide, the image grows to hold the labels and the colour scale."""

    classes: int
    names: list[str]
    title: str
    cell: int
    left: int
    top: int
    grid: int
    angle: int
    stride: int
    bottom_labels: int
    width: int
    height: int
    bar_x: int
    bar_ticks: list[float]
    bar_labels: list[str]
    name_font: Font
    value_font: Font
    title_font: Font
    axis_font: Font
    tick_font: Font

    BAR_WIDTH = 16

    @classmethod
    def plan(cls, class_names: Sequence[str], title: str, normalize: str | None, scale_max: float) -> "_Layout":
        c = len(class_names)
        cell = int(np.clip(round(640 / max(c, 1)), 10, 52))
        name_font = font(int(np.clip(cell - 4, 9, 14)))
        value_font = font(int(np.clip(cell * 0.32, 8, 13)))
        title_font, axis_font, tick_font = font(18), font(14), font(12)
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
        bar_ticks = [t for t in nice_ticks(0, scale_max, 5) if t <= scale_max + 1e-9]
        bar_labels = format_ticks(nice_ticks(0, scale_max, 5))[: len(bar_ticks)] if normalize \
            else format_ticks(bar_ticks)
        width = int(bar_x + cls.BAR_WIDTH + 8 + max(_text_size(t, tick_font)[0] for t in bar_labels) + 20)
        width = max(width, _text_size(title, title_font)[0] + 32)
        return cls(c, names, title, cell, left, top, grid, angle, stride, bottom_labels, width, height, bar_x,
                   bar_ticks, bar_labels, name_font, value_font, title_font, axis_font, tick_font)


def _draw_cells(draw: ImageDraw.ImageDraw, shares: np.ndarray, blank: np.ndarray, layout: _Layout) -> None:
    colours = _colormap(np.nan_to_num(shares, nan=0.0))
    left, top, cell, grid = layout.left, layout.top, layout.cell, layout.grid
    for i in range(layout.classes):
        for j in range(layout.classes):
            x, y = left + j * cell, top + i * cell
            if blank[i, j]:
                continue
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=tuple(int(v) for v in colours[i, j]))
    if layout.classes <= MAX_CLASSES_WITH_SEPARATORS:  # thin white separators between cells
        for k in range(1, layout.classes):
            draw.line([(left + k * cell, top), (left + k * cell, top + grid - 1)], fill=WHITE, width=1)
            draw.line([(left, top + k * cell), (left + grid - 1, top + k * cell)], fill=WHITE, width=1)
    draw.rectangle([left - 1, top - 1, left + grid, top + grid], outline=(200, 200, 200), width=1)


def _draw_values(draw: ImageDraw.ImageDraw, counts: np.ndarray, values: np.ndarray, blank: np.ndarray,
                 layout: _Layout, normalize: str | None, scale_max: float) -> None:
    left, top, cell = layout.left, layout.top, layout.cell
    for i in range(layout.classes):
        if normalize == "true" and blank[i].all():
            _draw_text(draw, (left + layout.grid / 2, top + i * cell + cell / 2), "no pixels", layout.value_font,
                       MUTED, "mm")
            continue
        for j in range(layout.classes):
            if blank[i, j] or counts[i, j] == 0:
                continue
            text = _cell_text(values[i, j], normalize is not None)
            if _text_size(text, layout.value_font)[0] > cell - 2:
                continue
            dark = values[i, j] / scale_max > 0.5
            _draw_text(draw, (left + j * cell + cell / 2, top + i * cell + cell / 2), text, layout.value_font,
                       WHITE if dark else TEXT, "mm")


def _draw_names(image: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout) -> None:
    """Class names: rows on the left, columns below (45° or vertical), and the two axis titles."""
    left, top, cell, grid = layout.left, layout.top, layout.cell, layout.grid
    row_stride = max(1, math.ceil((_line_height(layout.name_font) - 1) / cell))
    for i, name in enumerate(layout.names):
        if i % row_stride == 0:
            _draw_text(draw, (left - 8, top + i * cell + cell / 2), name, layout.name_font, TEXT, "rm")
    for j, name in enumerate(layout.names):
        if j % layout.stride:
            continue
        text = _rotated_text(name, layout.name_font, layout.angle)
        centre = left + j * cell + cell / 2
        x = centre + 2 - text.width if layout.angle == 45 else centre - text.width / 2
        image.paste(text, (round(x), layout.bottom_labels), text)
    _draw_text(draw, (left + grid / 2, layout.height - 14), "predicted class", layout.axis_font, TEXT, "md")
    text = _rotated_text("true class", layout.axis_font, 90)
    image.paste(text, (16, round(top + grid / 2 - text.height / 2)), text)


def _draw_scale(image: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout, scale_max: float) -> None:
    bar_x, top, bar_h, bar_w = layout.bar_x, layout.top, layout.grid, layout.BAR_WIDTH
    ramp = _colormap(np.linspace(1, 0, bar_h))[:, None, :].repeat(bar_w, axis=1)
    image.paste(Image.fromarray(ramp), (bar_x, top))
    draw.rectangle([bar_x - 1, top - 1, bar_x + bar_w, top + bar_h], outline=(200, 200, 200), width=1)
    for tick, label in zip(layout.bar_ticks, layout.bar_labels):
        y = top + bar_h - 1 - tick / scale_max * (bar_h - 1)
        draw.line([(bar_x + bar_w, y), (bar_x + bar_w + 4, y)], fill=AXIS, width=1)
        _draw_text(draw, (bar_x + bar_w + 7, y), label, layout.tick_font, MUTED, "lm")


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
