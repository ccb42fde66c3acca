"""Training curves and confusion-matrix heatmaps as PNGs, drawn with Pillow only (no matplotlib).

* :func:`plot_curves` — line charts (loss, learning rate, val mIoU, ...) in one or more panels.
* :func:`plot_confusion_matrix` — a row-normalised heatmap with class names on both axes.
* :func:`read_metrics_csv` / :func:`write_metrics_csv` — the ``iteration,<metric>,...`` CSV the curves
  come from (an empty cell means "no value at that iteration").

Lines and markers are drawn at twice the size and scaled down (anti-aliasing); text is drawn afterwards
at full resolution with Pillow's built-in scalable font (``ImageFont.load_default(size=...)``, Pillow ≥ 10.1
with FreeType), falling back to the small bitmap font where that is unavailable. Writes are atomic
(:func:`deeplab.visualize.save_png`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fileio import atomic_write_bytes
from .visualize import save_png

Series = list[tuple[float, float]]

WHITE = (255, 255, 255)
TEXT = (33, 33, 33)
MUTED = (110, 110, 110)
AXIS = (80, 80, 80)
GRID = (228, 228, 228)
# Tableau-10: distinct, colour-blind-friendlier line colours.
COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
# matplotlib "Blues" (light → dark); the darkest colour is 100 %.
BLUES: tuple[tuple[int, int, int], ...] = (
    (247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
    (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107),
)
SUPERSAMPLE = 2


# --------------------------------------------------------------------------------------------- fonts


@lru_cache(maxsize=None)
def font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at ``size`` px; the fixed bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError, AttributeError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _text_size(text: str, fnt) -> tuple[int, int]:
    left, top, right, bottom = fnt.getbbox(text)
    return int(math.ceil(right - left)), int(math.ceil(bottom - top))


def _line_height(fnt) -> int:
    left, top, right, bottom = fnt.getbbox("Agy0")
    return int(math.ceil(bottom))  # from the drawing origin, so text drawn at y fits in [y, y + height]


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fnt, fill=TEXT,
               anchor: str = "la") -> None:
    """``anchor``: two letters as in Pillow (l/m/r horizontally, a(top)/m/d(bottom) vertically)."""
    x, y = xy
    w, _ = _text_size(text, fnt)
    h = _line_height(fnt)
    x -= {"l": 0, "m": w / 2, "r": w}[anchor[0]]
    y -= {"a": 0, "m": h / 2, "d": h}[anchor[1]]
    draw.text((round(x), round(y)), text, font=fnt, fill=fill)


def _rotated_text(text: str, fnt, angle: float, fill=TEXT) -> Image.Image:
    """An RGBA image of ``text`` rotated counter-clockwise by ``angle`` degrees (transparent background)."""
    w, _ = _text_size(text, fnt)
    h = _line_height(fnt)
    mask = Image.new("L", (w + 4, h + 4), 0)
    ImageDraw.Draw(mask).text((2, 2), text, font=fnt, fill=255)
    mask = mask.rotate(angle, resample=Image.BICUBIC, expand=True)
    layer = Image.new("RGBA", mask.size, fill + (0,))
    layer.putalpha(mask)
    return layer


def _fit(text: str, fnt, max_width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits in ``max_width`` pixels."""
    if _text_size(text, fnt)[0] <= max_width:
        return text
    while len(text) > 1 and _text_size(text + "…", fnt)[0] > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


# --------------------------------------------------------------------------------------------- ticks


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) covering ``[lo, hi]``; about ``target`` intervals."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("tick limits must be finite")
    if hi < lo:
        lo, hi = hi, lo
    span = hi - lo
    if span <= 1e-12 * max(1.0, abs(lo), abs(hi)):  # constant: pad around the value
        pad = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi, span = lo - pad, hi + pad, 2 * pad
    raw = span / max(1, target)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [_clean(k * step, step) for k in range(first, last + 1)]


def _clean(value: float, step: float) -> float:
    digits = max(0, -math.floor(math.log10(step))) + 2
    value = round(value, digits)
    return 0.0 if value == 0 else value


def format_ticks(ticks: Sequence[float]) -> list[str]:
    """Short labels for evenly spaced ticks: ``0 0.25 0.5``, ``10k 20k``, ``2e-5 4e-5``."""
    if len(ticks) < 2:
        return [f"{t:g}" for t in ticks]
    step = abs(ticks[1] - ticks[0])
    biggest = max(abs(t) for t in ticks)
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if step >= unit and biggest >= 10 * unit and all(float(t) % unit == 0 for t in ticks):
            return [f"{t / unit:g}{suffix}" if t else "0" for t in ticks]
    if step >= 1 and biggest < 1e7:
        return [f"{t:.0f}" for t in ticks]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    while decimals < 6 and any(abs(round(t, decimals) - t) > step * 1e-3 for t in ticks):
        decimals += 1  # steps other than 1/2/5 × 10^k, e.g. 0.025
    if decimals <= 4 and biggest < 1e7:
        return [f"{t:.{decimals}f}".rstrip("0").rstrip(".") if t else "0" for t in ticks]
    return [_short_exp(t) for t in ticks]


def _short_exp(value: float) -> str:
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _format_value(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return _short_exp(value)


# --------------------------------------------------------------------------------------------- curves


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


def _layout_panel(names: list[str], data: Mapping[str, np.ndarray], colour_of, x_label: str, smooth: float,
                  box: tuple[int, int, int, int], gdraw: ImageDraw.ImageDraw, texts: list, label_font,
                  tick_font) -> None:
    s = SUPERSAMPLE
    ox, oy, pw, ph = box
    arrays = [data.get(name, np.zeros((0, 2))) for name in names]
    finite = [a[np.isfinite(a[:, 1])] for a in arrays]
    allpoints = np.concatenate(finite) if finite else np.zeros((0, 2))
    has_data = len(allpoints) > 0

    # Heading: the series name(s) and, for one series, its last value.
    if len(names) == 1 and has_data:
        heading = f"{names[0]}   (last {_format_value(allpoints[-1, 1])})"
    else:
        heading = ", ".join(names) if len(names) <= 3 else f"{len(names)} series"
    heading_h = _line_height(label_font)

    if has_data:
        x_ticks = nice_ticks(float(allpoints[:, 0].min()), float(allpoints[:, 0].max()), 5)
        y_ticks = nice_ticks(float(allpoints[:, 1].min()), float(allpoints[:, 1].max()), 5)
    else:
        x_ticks, y_ticks = [0.0, 1.0], [0.0, 1.0]
    x_labels, y_labels = format_ticks(x_ticks), format_ticks(y_ticks)
    tick_h = _line_height(tick_font)
    y_label_w = max(_text_size(t, tick_font)[0] for t in y_labels)

    left = ox + 14 + heading_h + 8 + y_label_w + 6  # rotated axis label | tick labels | axis
    right = ox + pw - 24
    top = oy + 12 + heading_h + 10
    bottom = oy + ph - (6 + tick_h + 8 + _line_height(label_font) + 14)
    plot_w, plot_h = right - left, bottom - top
    texts.append(("text", ((left + right) / 2, oy + 12), _fit(heading, label_font, pw - 20), label_font, TEXT,
                  "ma"))

    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]

    def px(x: np.ndarray | float) -> np.ndarray | float:
        return left + (np.asarray(x) - x0) / (x1 - x0) * plot_w

    def py(y: np.ndarray | float) -> np.ndarray | float:
        return bottom - (np.asarray(y) - y0) / (y1 - y0) * plot_h

    # Grid, axes, ticks.
    for t, label in zip(x_ticks, x_labels):
        x = float(px(t))
        gdraw.line([(x * s, top * s), (x * s, bottom * s)], fill=GRID, width=s)
        gdraw.line([(x * s, bottom * s), (x * s, (bottom + 4) * s)], fill=AXIS, width=s)
        texts.append(("text", (x, bottom + 6), label, tick_font, MUTED, "ma"))
    for t, label in zip(y_ticks, y_labels):
        y = float(py(t))
        gdraw.line([(left * s, y * s), (right * s, y * s)], fill=GRID, width=s)
        gdraw.line([((left - 4) * s, y * s), (left * s, y * s)], fill=AXIS, width=s)
        texts.append(("text", (left - 7, y), label, tick_font, MUTED, "rm"))
    gdraw.line([(left * s, top * s), (left * s, bottom * s), (right * s, bottom * s)], fill=AXIS, width=s)
    texts.append(("text", ((left + right) / 2, oy + ph - 10), x_label, label_font, TEXT, "md"))
    y_axis_label = names[0] if len(names) == 1 else "value"
    texts.append(("rot", (ox + 10 + heading_h / 2, (top + bottom) / 2), _fit(y_axis_label, label_font, plot_h),
                  label_font, TEXT))

    if not has_data:
        texts.append(("text", ((left + right) / 2, (top + bottom) / 2), "no data", label_font, MUTED, "mm"))
        return

    # Lines (NaN breaks them) and markers for sparse series.
    marker_limit = max(1, plot_w // 14)
    for name, array in zip(names, arrays):
        colour = colour_of[name]
        n_finite = int(np.isfinite(array[:, 1]).sum())
        if n_finite == 0:
            continue
        xs, ys = px(array[:, 0]) * s, py(array[:, 1]) * s
        if smooth > 0 and n_finite > marker_limit:  # sparse series (evaluations) are drawn as they are
            _polyline(gdraw, xs, ys, _lighten(colour, 0.65), 1 * s)
            _polyline(gdraw, xs, py(_ema(array[:, 1], smooth)) * s, colour, 2 * s)
        else:
            _polyline(gdraw, xs, ys, colour, 2 * s)
        if n_finite <= marker_limit:
            r = 3.5 * s
            for x, y in zip(xs, ys):
                if math.isfinite(y):
                    gdraw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=WHITE, width=s)

    # Legend (top right, inside the plot) when several series share the panel.
    if len(names) > 1:
        entry_h = _line_height(tick_font) + 6
        legend_w = max(_text_size(n, tick_font)[0] for n in names) + 34
        lx1, ly0 = right - 8, top + 8
        lx0, ly1 = lx1 - legend_w, ly0 + entry_h * len(names) + 6
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


# --------------------------------------------------------------------------------------------- confusion


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


# --------------------------------------------------------------------------------------------- CSV


def read_metrics_csv(path: str | os.PathLike) -> dict[str, Series]:
    """``iteration,<metric>,...`` CSV → ``{metric: [(iteration, value), ...]}`` (empty cells skipped).

    The first column is the x value whatever its header says; columns keep their order; a metric with no
    values at all gives an empty list; ``nan`` cells are kept (the plot breaks the line there).
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]
    names = header[1:]
    out: dict[str, Series] = {name: [] for name in names}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        try:
            x = float(row[0])
        except ValueError as error:
            raise ValueError(f"{path}:{line}: bad {header[0]!r} value {row[0]!r}") from error
        for name, cell in zip(names, row[1:]):
            cell = cell.strip()
            if not cell:
                continue
            try:
                out[name].append((x, float(cell)))
            except ValueError as error:
                raise ValueError(f"{path}:{line}: bad {name!r} value {cell!r}") from error
    return out


def write_metrics_csv(series: Mapping[str, Sequence[Sequence[float]]], path: str | os.PathLike, *,
                      x_name: str = "iteration") -> Path:
    """The inverse of :func:`read_metrics_csv`: one row per x value, empty cells where a metric has none."""
    names = list(series)
    table: dict[float, dict[str, float]] = {}
    for name in names:
        for x, y in series[name]:
            table.setdefault(float(x), {})[name] = float(y)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([x_name, *names])
    for x in sorted(table):
        cells = table[x]
        writer.writerow([_csv_number(x), *(_csv_number(cells[n]) if n in cells else "" for n in names)])
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def _csv_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
