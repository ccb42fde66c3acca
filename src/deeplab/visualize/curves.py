"""Training curves: :func:`plot_curves` draws line charts (loss, learning rate, val mIoU, ...) in one or
more panels, with optional smoothing, markers for sparse series and a legend for shared panels."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .images import save_png
from .drawing import (AXIS, COLOURS, GRID, MUTED, SUPERSAMPLE, TEXT, WHITE, _draw_text, _fit, _format_value,
                      _line_height, _rotated_text, _text_size, font, format_ticks, nice_ticks)

def _clean_points(points: Iterable[Sequence[float]]) -> np.ndarray:
    """N×2 float array, NaN kept (they break the line); rows with a non-finite x dropped."""
    array = np.asarray([(float(x), float(y)) for x, y in points], dtype=np.float64).reshape(-1, 2)
    array = array[np.isfinite(array[:, 0])]
    array[~np.isfinite(array[:, 1]), 1] = np.nan  # ±inf are not drawable either
    return array[np.argsort(array[:, 0], kind="stable")]


def _ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average (bias-corrected), NaN skipped."""
    out = np.full_like(values, np.nan)
    average, count = 0.0, 0
    for i, v in enumerate(values):
        if math.isnan(v):
            continue
        average = weight * average + (1 - weight) * v
        count += 1
        out[i] = average / (1 - weight ** count)
    return out


def _lighten(colour: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    return tuple(round(c + (255 - c) * amount) for c in colour)  # type: ignore[return-value]


def plot_curves(series: Mapping[str, Sequence[Sequence[float]]], path: str | os.PathLike, *, title: str = "",
                x_label: str = "iteration", panels: Sequence[Sequence[str]] | None = None,
                smooth: float = 0.0, panel_size: tuple[int, int] | None = None, columns: int = 3) -> Path:
    """Line charts of ``{name: [(x, y), ...]}`` as a PNG; returns the path.

    ``panels`` groups series into side-by-side charts, e.g. ``[["train loss"], ["lr"], ["val mIoU"]]``
    (default: one panel per series); series sharing a panel get a legend. NaN values break the line,
    series with few points get markers, and ``smooth`` (0..1, e.g. 0.9) overlays an exponential moving
    average on a faint raw line. At most ``columns`` panels per row; ~1200 px wide for three panels.
    """
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    data = {name: _clean_points(points) for name, points in series.items()}
    if panels is None:
        panels = [[name] for name in data] or [[]]
    panels = [list(p) for p in panels] or [[]]
    colour_of = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(data)}
    for name in (n for p in panels for n in p if n not in colour_of):
        colour_of[name] = COLOURS[len(colour_of) % len(COLOURS)]

    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    if panel_size is None:
        panel_size = (max(400, 1200 // columns), 380 if columns > 1 else 420)
    panel_w, panel_h = panel_size
    title_font, label_font, tick_font = font(18), font(14), font(12)
    title_h = _line_height(title_font) + 20 if title else 6
    width, height = columns * panel_w, title_h + rows * panel_h

    s = SUPERSAMPLE
    graphics = Image.new("RGB", (width * s, height * s), WHITE)
    gdraw = ImageDraw.Draw(graphics)
    texts: list[tuple] = []  # drawn after downsampling: (kind, args...)

    if title:
        texts.append(("text", (width / 2, 10), title, title_font, TEXT, "ma"))

    for index, names in enumerate(panels):
        ox = (index % columns) * panel_w
        oy = title_h + (index // columns) * panel_h
        _layout_panel(names, data, colour_of, x_label, smooth, (ox, oy, panel_w, panel_h),
                      gdraw, texts, label_font, tick_font)

    image = graphics.resize((width, height), Image.LANCZOS)
    draw = ImageDraw.Draw(image)
    for item in texts:
        if item[0] == "text":
            _, xy, text, fnt, fill, anchor = item
            _draw_text(draw, xy, text, fnt, fill, anchor)
        else:  # rotated y label, centred on xy
            _, (cx, cy), text, fnt, fill = item
            layer = _rotated_text(text, fnt, 90, fill)
            image.paste(layer, (round(cx - layer.width / 2), round(cy - layer.height / 2)), layer)
    return save_png(image, path)


@dataclass
class _Axes:
    """A panel's plot area in output pixels and the data range its ticks span."""

    left: float
    right: float
    top: float
    bottom: float
    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.left + (np.asarray(x) - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: np.ndarray | float) -> np.ndarray | float:
        return self.bottom - (np.asarray(y) - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)


def _layout_panel(names: list[str], data: Mapping[str, np.ndarray], colour_of, x_label: str, smooth: float,
                  box: tuple[int, int, int, int], gdraw: ImageDraw.ImageDraw, texts: list, label_font,
                  tick_font) -> None:
    """One panel: heading, grid and axes, the series' lines, and a legend when several share it. Lines are
    drawn on the supersampled ``gdraw``; text is queued in ``texts`` to be drawn after downscaling."""
    arrays = [data.get(name, np.zeros((0, 2))) for name in names]
    finite = [a[np.isfinite(a[:, 1])] for a in arrays]
    points = np.concatenate(finite) if finite else np.zeros((0, 2))
    axes = _draw_axes(names, points, x_label, box, gdraw, texts, label_font, tick_font)
    if not len(points):
        texts.append(("text", ((axes.left + axes.right) / 2, (axes.top + axes.bottom) / 2), "no data", label_font,
                      MUTED, "mm"))
        return
    _draw_series(names, arrays, colour_of, smooth, axes, gdraw)
    if len(names) > 1:
        _draw_legend(names, colour_of, axes, arrays, gdraw, texts, tick_font)


def _draw_axes(names: list[str], points: np.ndarray, x_label: str, box: tuple[int, int, int, int],
               gdraw: ImageDraw.ImageDraw, texts: list, label_font, tick_font) -> _Axes:
    """Heading (the series name(s) and, for one series, its last value), grid, ticks and axis labels."""
    s = SUPERSAMPLE
    ox, oy, pw, ph = box
    if len(names) == 1 and len(points):
        heading = f"{names[0]}   (last {_format_value(points[-1, 1])})"
    else:
        heading = ", ".join(names) if len(names) <= 3 else f"{len(names)} series"
    heading_h = _line_height(label_font)
    if len(points):
        x_ticks = nice_ticks(float(points[:, 0].min()), float(points[:, 0].max()), 5)
        y_ticks = nice_ticks(float(points[:, 1].min()), float(points[:, 1].max()), 5)
    else:
        x_ticks, y_ticks = [0.0, 1.0], [0.0, 1.0]
    x_labels, y_labels = format_ticks(x_ticks), format_ticks(y_ticks)
    y_label_w = max(_text_size(t, tick_font)[0] for t in y_labels)
    axes = _Axes(left=ox + 14 + heading_h + 8 + y_label_w + 6,  # rotated axis label | tick labels | axis
                 right=ox + pw - 24, top=oy + 12 + heading_h + 10,
                 bottom=oy + ph - (6 + _line_height(tick_font) + 8 + _line_height(label_font) + 14),
                 x0=x_ticks[0], x1=x_ticks[-1], y0=y_ticks[0], y1=y_ticks[-1])
    left, right, top, bottom = axes.left, axes.right, axes.top, axes.bottom
    texts.append(("text", ((left + right) / 2, oy + 12), _fit(heading, label_font, pw - 20), label_font, TEXT,
                  "ma"))
    for t, label in zip(x_ticks, x_labels):
        x = float(axes.px(t))
        gdraw.line([(x * s, top * s), (x * s, bottom * s)], fill=GRID, width=s)
        gdraw.line([(x * s, bottom * s), (x * s, (bottom + 4) * s)], fill=AXIS, width=s)
        texts.append(("text", (x, bottom + 6), label, tick_font, MUTED, "ma"))
    for t, label in zip(y_ticks, y_labels):
        y = float(axes.py(t))
        gdraw.line([(left * s, y * s), (right * s, y * s)], fill=GRID, width=s)
        gdraw.line([((left - 4) * s, y * s), (left * s, y * s)], fill=AXIS, width=s)
        texts.append(("text", (left - 7, y), label, tick_font, MUTED, "rm"))
    gdraw.line([(left * s, top * s), (left * s, bottom * s), (right * s, bottom * s)], fill=AXIS, width=s)
    texts.append(("text", ((left + right) / 2, oy + ph - 10), x_label, label_font, TEXT, "md"))
    y_axis_label = names[0] if len(names) == 1 else "value"
    texts.append(("rot", (ox + 10 + heading_h / 2, (top + bottom) / 2), _fit(y_axis_label, label_font, bottom - top),
                  label_font, TEXT))
    return axes


def _draw_series(names: list[str], arrays: list[np.ndarray], colour_of, smooth: float, axes: _Axes,
                 gdraw: ImageDraw.ImageDraw) -> None:
    """Lines (NaN breaks them), a smoothed line over a light raw one for dense series, markers for sparse ones."""
    s = SUPERSAMPLE
    marker_limit = max(1, int(axes.right - axes.left) // 14)
    for name, array in zip(names, arrays):
        colour = colour_of[name]
        n_finite = int(np.isfinite(array[:, 1]).sum())
        if n_finite == 0:
            continue
        xs, ys = axes.px(array[:, 0]) * s, axes.py(array[:, 1]) * s
        if smooth > 0 and n_finite > marker_limit:  # sparse series (evaluations) are drawn as they are
            _polyline(gdraw, xs, ys, _lighten(colour, 0.65), 1 * s)
            _polyline(gdraw, xs, axes.py(_ema(array[:, 1], smooth)) * s, colour, 2 * s)
        else:
            _polyline(gdraw, xs, ys, colour, 2 * s)
        if n_finite <= marker_limit:
            r = 3.5 * s
            for x, y in zip(xs, ys):
                if math.isfinite(y):
                    gdraw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=WHITE, width=s)


def _line_pixels(arrays: list[np.ndarray], axes: _Axes) -> np.ndarray:
    """Points along every drawn line, about one per output pixel between finite neighbours (N×2, pixels)."""
    points = []
    for array in arrays:
        xs, ys = axes.px(array[:, 0]), axes.py(array[:, 1])
        for (xa, ya), (xb, yb) in zip(zip(xs[:-1], ys[:-1]), zip(xs[1:], ys[1:])):
            if not (math.isfinite(ya) and math.isfinite(yb)):
                continue
            steps = max(2, int(abs(xb - xa) + abs(yb - ya)) + 1)
            t = np.linspace(0.0, 1.0, steps)
            points.append(np.stack([xa + t * (xb - xa), ya + t * (yb - ya)], axis=1))
        finite = np.isfinite(ys)
        points.append(np.stack([xs[finite], ys[finite]], axis=1))  # lone points (markers) too
    return np.concatenate(points) if points else np.zeros((0, 2))


def legend_corner(arrays: list[np.ndarray], axes: _Axes, width: float, height: float,
                  margin: float = 8) -> tuple[float, float]:
    """The top-left pixel of a ``width``×``height`` legend in the plot corner that hides the fewest line
    pixels — top right, then top left, bottom right, bottom left on ties: curves that end high (mIoU,
    accuracy) would run under a fixed top-right box."""
    line = _line_pixels(arrays, axes)
    corners = [(axes.right - margin - width, axes.top + margin), (axes.left + margin, axes.top + margin),
               (axes.right - margin - width, axes.bottom - margin - height),
               (axes.left + margin, axes.bottom - margin - height)]

    def hidden(corner: tuple[float, float]) -> int:
        x0, y0 = corner
        inside = ((line[:, 0] >= x0 - 3) & (line[:, 0] <= x0 + width + 3)
                  & (line[:, 1] >= y0 - 3) & (line[:, 1] <= y0 + height + 3))  # 3 px: the line's own width
        return int(inside.sum())

    return min(corners, key=hidden)  # min keeps the first of equals


def _draw_legend(names: list[str], colour_of, axes: _Axes, arrays: list[np.ndarray], gdraw: ImageDraw.ImageDraw,
                 texts: list, tick_font) -> None:
    """Inside the plot, in the corner where it hides least of the lines (``legend_corner``)."""
    s = SUPERSAMPLE
    entry_h = _line_height(tick_font) + 6
    legend_w = max(_text_size(n, tick_font)[0] for n in names) + 34
    legend_h = entry_h * len(names) + 6
    lx0, ly0 = legend_corner(arrays, axes, legend_w, legend_h)
    lx1, ly1 = lx0 + legend_w, ly0 + legend_h
    gdraw.rectangle([lx0 * s, ly0 * s, lx1 * s, ly1 * s], fill=WHITE, outline=GRID, width=s)
    for i, name in enumerate(names):
        cy = ly0 + 3 + entry_h * i + entry_h / 2
        gdraw.line([((lx0 + 8) * s, cy * s), ((lx0 + 24) * s, cy * s)], fill=colour_of[name], width=3 * s)
        texts.append(("text", (lx0 + 30, cy), name, tick_font, TEXT, "lm"))


def _polyline(draw: ImageDraw.ImageDraw, xs: np.ndarray, ys: np.ndarray, colour, width: int) -> None:
    """Connected segments through the finite points; a NaN starts a new segment."""
    segment: list[tuple[float, float]] = []
    for x, y in zip(list(xs) + [math.nan], list(ys) + [math.nan]):
        if math.isfinite(y):
            segment.append((float(x), float(y)))
            continue
        if len(segment) > 1:
            draw.line(segment, fill=colour, width=width, joint="curve")
        segment = []
