"""What the plots share: colours, fonts, text placement, and round tick values with short labels.

Lines and markers are drawn at ``SUPERSAMPLE`` times the size and scaled down (anti-aliasing); text is
drawn afterwards at full resolution with Pillow's built-in scalable font
(``ImageFont.load_default(size=...)``, Pillow ≥ 10.1 with FreeType), falling back to the small bitmap font
where that is unavailable.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

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


Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


@lru_cache(maxsize=None)
def font(size: int = 13) -> Font:
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
