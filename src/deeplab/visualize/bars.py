"""Horizontal bar charts (e.g. images/s per inference path), one bar per row with its value printed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from .drawing import AXIS, COLOURS, GRID, MUTED, TEXT, WHITE, _draw_text, _line_height, _text_size, font, nice_ticks
from .images import save_png


def plot_bars(labels: Sequence[str], values: Sequence[float], path: str | os.PathLike, *, title: str = "",
              unit: str = "", notes: Sequence[str] | None = None, width: int = 900) -> Path:
    """``labels[i]`` with a bar of length ``values[i]`` (≥ 0) and its value; ``notes[i]`` (e.g. "2.1×") after it."""
    if len(labels) != len(values) or not labels:
        raise ValueError("plot_bars needs one value per label, and at least one")
    label_font, value_font, title_font = font(13), font(12), font(16)
    row = max(_line_height(label_font), 18) + 10
    left = max(_text_size(str(label), label_font)[0] for label in labels) + 24
    top = (_line_height(title_font) + 18) if title else 10
    height = top + row * len(labels) + 40
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    if title:
        _draw_text(draw, (width / 2, 8), title, title_font, TEXT, "ma")
    ticks = nice_ticks(0.0, max(max(values), 1e-12))
    span = ticks[-1] or 1.0
    plot_width = width - left - 110
    for tick in ticks:
        x = left + plot_width * tick / span
        draw.line([(x, top - 4), (x, top + row * len(labels))], fill=GRID)
        _draw_text(draw, (x, top + row * len(labels) + 6), f"{tick:g}", value_font, MUTED, "ma")
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * row
        _draw_text(draw, (left - 10, y + row / 2), str(label), label_font, TEXT, "rm")
        length = plot_width * max(value, 0.0) / span
        draw.rectangle([left, y + 4, left + length, y + row - 4], fill=COLOURS[0])
        text = f"{value:.3g} {unit}".strip() + (f"  {notes[i]}" if notes else "")
        _draw_text(draw, (left + length + 6, y + row / 2), text, value_font, TEXT, "lm")
    draw.line([(left, top - 4), (left, top + row * len(labels))], fill=AXIS)
    return save_png(image, path)
