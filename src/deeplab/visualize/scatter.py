"""Accuracy against time: :func:`plot_tradeoff` draws one dot per setting (x: milliseconds on a log axis,
y: a score), coloured by series (e.g. the inference path), with the Pareto front joined by a line and
labelled — the settings worth choosing for a time budget."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from .drawing import AXIS, COLOURS, GRID, MUTED, TEXT, WHITE, _draw_text, _line_height, font, nice_ticks
from .images import save_png


@dataclass(frozen=True)
class TradeoffPoint:
    ms: float
    score: float
    series: str          # colour and legend entry
    label: str = ""      # written beside the dot when it is on the front
    on_front: bool = False


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks covering [lo, hi] on a log axis."""
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0 ** exponent for m in (1, 2, 5)]
    inside = [t for t in ticks if lo <= t <= hi]
    below, above = [t for t in ticks if t < lo], [t for t in ticks if t > hi]
    return ([below[-1]] if below else []) + inside + ([above[0]] if above else [])


def plot_tradeoff(points: Sequence[TradeoffPoint], path: str | os.PathLike, *, title: str = "",
                  y_label: str = "mIoU %", width: int = 1000, height: int = 640) -> Path:
    if not points or any(not (p.ms > 0 and math.isfinite(p.score)) for p in points):
        raise ValueError("plot_tradeoff needs points with positive times and finite scores")
    small, label_font, title_font = font(12), font(11), font(16)
    series = list(dict.fromkeys(p.series for p in points))
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(series)}
    left, right = 70, width - 190
    top, bottom = (_line_height(title_font) + 24) if title else 16, height - 56
    x_ticks = _log_ticks(min(p.ms for p in points), max(p.ms for p in points))
    y_ticks = nice_ticks(min(p.score for p in points), max(p.score for p in points))
    lx0, lx1 = math.log10(x_ticks[0]), math.log10(x_ticks[-1])

    def at(ms: float, score: float) -> tuple[float, float]:
        x = left + (right - left) * (math.log10(ms) - lx0) / ((lx1 - lx0) or 1.0)
        y = bottom - (bottom - top) * (score - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0)
        return x, y

    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    if title:
        _draw_text(draw, (width / 2, 8), title, title_font, TEXT, "ma")
    for tick in x_ticks:
        x, _ = at(tick, y_ticks[0])
        draw.line([(x, top), (x, bottom)], fill=GRID)
        _draw_text(draw, (x, bottom + 6), f"{tick:g}", small, MUTED, "ma")
    for tick in y_ticks:
        _, y = at(x_ticks[0], tick)
        draw.line([(left, y), (right, y)], fill=GRID)
        _draw_text(draw, (left - 8, y), f"{tick:g}", small, MUTED, "rm")
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    _draw_text(draw, ((left + right) / 2, bottom + 26), "ms per image (log scale)", small, TEXT, "ma")
    _draw_text(draw, (8, top - 14), y_label, small, TEXT, "la")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.ms)
    if len(front) > 1:
        draw.line([at(p.ms, p.score) for p in front], fill=AXIS, width=2)
    for p in points:
        x, y = at(p.ms, p.score)
        r = 6 if p.on_front else 4
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour[p.series], outline=AXIS if p.on_front else None)
    for i, p in enumerate(front):  # labels alternately below and above their dot, so neighbours do not collide
        x, y = at(p.ms, p.score)
        side = "r" if x > left + 0.7 * (right - left) else "l"  # near the legend: written to the left
        _draw_text(draw, (x + (8 if side == "l" else -8), y + 6 if i % 2 == 0 else y - 6), p.label, label_font,
                   TEXT, side + ("a" if i % 2 == 0 else "d"))
    for i, name in enumerate(series):  # legend
        y = top + 8 + i * 20
        draw.ellipse([right + 16, y - 5, right + 26, y + 5], fill=colour[name])
        _draw_text(draw, (right + 34, y), name, small, TEXT, "lm")
    _draw_text(draw, (right + 16, top + 16 + len(series) * 20), "outlined: Pareto front", small, MUTED, "lm")
    return save_png(image, path)
