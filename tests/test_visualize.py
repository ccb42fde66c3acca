"""Pillow-only pictures: training curves (and the metrics CSV they are drawn from), the confusion-matrix heatmap,
and the font fallback."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.training.metrics_csv import read_metrics_csv, write_metrics_csv
from deeplab.visualize import plot_confusion_matrix, plot_curves
from deeplab.visualize.drawing import BLUES, COLOURS, format_ticks, nice_ticks


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(np.int64)


def _near(pixels: np.ndarray, colour, tolerance: int = 30) -> np.ndarray:
    return (np.abs(pixels - np.asarray(colour)) <= tolerance).all(axis=-1)


def _training_series(n: int = 100) -> dict[str, list[tuple[float, float]]]:
    rng = np.random.default_rng(0)
    iterations = np.arange(n) * 100
    loss = 0.3 + 2.0 * np.exp(-iterations / 2000) + rng.normal(0, 0.05, n)
    lr = 0.01 * (1 - iterations / (n * 100)) ** 0.9
    return {"train loss": list(zip(iterations.tolist(), loss.tolist())),
            "lr": list(zip(iterations.tolist(), lr.tolist())),
            "val mIoU": [(2000, 0.4), (4000, 0.52), (6000, 0.6), (8000, 0.63), (9900, 0.65)]}


# ------------------------------------------------------------------------------------------ ticks


@pytest.mark.parametrize("lo, hi", [(0, 0.93), (0.41, 0.66), (0, 9900), (1e-5, 7e-3), (-3.2, 17), (2, 2.0004)])
def test_nice_ticks_cover_the_range_in_1_2_5_steps(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    assert 3 <= len(ticks) <= 12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5))


def test_nice_ticks_constant_and_zero() -> None:
    assert nice_ticks(3.0, 3.0)[0] < 3.0 < nice_ticks(3.0, 3.0)[-1]
    assert nice_ticks(0.0, 0.0)[0] < 0.0 < nice_ticks(0.0, 0.0)[-1]


def test_format_ticks_is_short() -> None:
    assert format_ticks([0, 0.2, 0.4]) == ["0", "0.2", "0.4"]
    assert format_ticks([0, 10000, 20000]) == ["0", "10k", "20k"]
    assert format_ticks([0, 0.025, 0.05]) == ["0", "0.025", "0.05"]
    assert format_ticks([0, 2e-5, 4e-5]) == ["0", "2e-5", "4e-5"]
    assert format_ticks([0, 250, 500]) == ["0", "250", "500"]


# ------------------------------------------------------------------------------------------ curves


def test_curves_png_written_with_expected_size_and_content(tmp_path: Path) -> None:
    path = plot_curves(_training_series(), tmp_path / "sub" / "curves.png", title="run",
                       panels=[["train loss"], ["lr"], ["val mIoU"]])
    assert path == tmp_path / "sub" / "curves.png" and path.is_file()
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left nothing behind
    pixels = _load(path)
    height, width, _ = pixels.shape
    assert 900 <= width <= 1600 and 300 <= height <= 600
    assert pixels.var() > 0
    for colour in COLOURS[:3]:  # every series drew something in its own colour
        assert _near(pixels, colour, 20).sum() > 50


def test_monotone_series_goes_from_lower_left_to_upper_right(tmp_path: Path) -> None:
    pixels = _load(plot_curves({"y": [(x, 2.0 * x + 1) for x in range(200)]}, tmp_path / "up.png"))
    ys, xs = np.nonzero(_near(pixels, COLOURS[0], 25))
    assert len(xs) > 200
    span = xs.max() - xs.min()
    assert span > 0.6 * pixels.shape[1]  # the line runs across the panel
    left_y = ys[xs < xs.min() + 0.1 * span].mean()
    right_y = ys[xs > xs.max() - 0.1 * span].mean()
    assert left_y - right_y > 0.5 * pixels.shape[0]  # image rows grow downwards: the line rises

    pixels = _load(plot_curves({"y": [(x, -x) for x in range(200)]}, tmp_path / "down.png"))
    ys, xs = np.nonzero(_near(pixels, COLOURS[0], 25))
    span = xs.max() - xs.min()
    assert ys[xs < xs.min() + 0.1 * span].mean() < ys[xs > xs.max() - 0.1 * span].mean()


def test_shared_panel_draws_both_series_and_smoothing(tmp_path: Path) -> None:
    series = _training_series(400)
    series["val loss"] = [(x, 0.5 + 1.5 * math.exp(-x / 2000)) for x in range(0, 40000, 4000)]
    pixels = _load(plot_curves(series, tmp_path / "shared.png", panels=[["train loss", "val loss"]], smooth=0.9))
    assert _near(pixels, COLOURS[0], 20).sum() > 50
    assert _near(pixels, COLOURS[3], 20).sum() > 50  # "val loss" is the 4th series


def test_legend_corner_prefers_top_right_when_it_is_free() -> None:
    from deeplab.visualize.curves import _Axes, legend_corner

    axes = _Axes(left=0, right=400, top=0, bottom=300, x0=0, x1=1, y0=0, y1=1)
    falling = [np.array([[0.0, 0.9], [1.0, 0.1]])]  # top left to bottom right
    assert legend_corner(falling, axes, 100, 50) == (292, 8)  # top right: 400 - 8 - 100
    rising = [np.array([[0.0, 0.1], [1.0, 0.9]])]  # bottom left to top right
    assert legend_corner(rising, axes, 100, 50) == (8, 8)  # top left
    high = [np.array([[0.0, 0.95], [1.0, 0.95]])]  # along the top
    assert legend_corner(high, axes, 100, 50) == (292, 242)  # bottom right


@pytest.mark.parametrize("series", [
    {},
    {"empty": []},
    {"single": [(5, 0.5)]},
    {"constant": [(0, 3.0), (10, 3.0), (20, 3.0)]},
    {"zeros": [(0, 0.0), (1, 0.0)]},
    {"nan": [(0, 1.0), (1, float("nan")), (2, 0.5), (3, 0.2)]},
    {"all nan": [(0, float("nan")), (1, float("nan"))]},
    {"inf": [(0, float("inf")), (1, 1.0), (2, 2.0)]},
    {"same x": [(3, 1.0), (3, 2.0)]},
    {"huge": [(0, 1e12), (1, 3e12)], "tiny": [(0, 1e-9), (1, 3e-9)]},
])
def test_degenerate_series_do_not_crash(tmp_path: Path, series) -> None:
    pixels = _load(plot_curves(series, tmp_path / "edge.png", title="edge"))
    assert pixels.var() > 0


def test_panel_naming_a_missing_series_is_empty_not_an_error(tmp_path: Path) -> None:
    pixels = _load(plot_curves({"a": [(0, 1), (1, 2)]}, tmp_path / "p.png", panels=[["a"], ["b"], ["c"], ["d"]]))
    assert pixels.shape[1] == 1200 and pixels.shape[0] > 600  # two rows of panels


def test_bad_smooth_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_curves({"a": [(0, 1)]}, tmp_path / "x.png", smooth=1.0)


# ------------------------------------------------------------------------------------------ confusion


def _cell_grid(pixels: np.ndarray, c: int) -> tuple[int, int, float]:
    """Origin and cell size of the heatmap, from the darkest-colour pixels of a dark first/last diagonal."""
    ys, xs = np.nonzero((pixels == np.asarray(BLUES[-1])).all(axis=-1))
    offset = xs - ys  # constant ± one cell along the diagonal
    cell_estimate = math.sqrt(len(xs) / c)
    inliers = np.abs(offset - np.median(offset)) < 1.5 * cell_estimate  # drop the colour bar's darkest end
    assert inliers.mean() > 0.95
    xs, ys = xs[inliers], ys[inliers]
    size = (xs.max() - xs.min() + 1) / c
    assert size == pytest.approx((ys.max() - ys.min() + 1) / c, abs=1)
    return int(xs.min()), int(ys.min()), size


def test_identity_matrix_has_darkest_diagonal(tmp_path: Path) -> None:
    c = 4
    path = plot_confusion_matrix(np.eye(c, dtype=np.int64) * 1000, ["road", "car", "sky", "tree"], tmp_path / "cm.png")
    pixels = _load(path)
    x0, y0, size = _cell_grid(pixels, c)
    for i in range(c):
        for j in range(c):
            colour = tuple(pixels[round(y0 + i * size + 3), round(x0 + j * size + 3)])
            assert colour == (BLUES[-1] if i == j else BLUES[0])
        # the value (white "100") is written in the diagonal cells
        top, left = round(y0 + i * size), round(x0 + i * size)
        cell = pixels[top: top + round(size), left: left + round(size)]
        assert _near(cell, (255, 255, 255), 10).sum() > 5


def test_row_without_pixels_is_blank(tmp_path: Path) -> None:
    matrix = np.eye(4, dtype=np.int64) * 50
    matrix[0, 1] = 50  # row 0: 50 % / 50 %
    matrix[0, 0] = 200
    matrix[2] = 0
    matrix[3, 3] = 10
    pixels = _load(plot_confusion_matrix(matrix, list("abcd"), tmp_path / "cm.png"))
    # row 0 is 80 % on its diagonal, rows 1 and 3 are 100 %: the darkest cells are diagonal cells 1 and 3
    darkest = (pixels == np.asarray(BLUES[-1])).all(axis=-1)
    assert darkest.sum() > 100
    ys, xs = np.nonzero(darkest)
    inliers = np.abs((xs - ys) - np.median(xs - ys)) < 1.5 * math.sqrt(len(xs) / 3)
    xs, ys = xs[inliers], ys[inliers]
    size = (xs.max() - xs.min() + 1) / 3  # cells 1..3 on the diagonal
    x0, y0 = xs.min() - size, ys.min() - size
    blank_row = pixels[round(y0 + 2 * size + 2): round(y0 + 3 * size - 2), round(x0 + 2): round(x0 + 4 * size - 2)]
    assert (blank_row >= 100).all()  # white, except the grey "no pixels" text
    assert _near(blank_row, (255, 255, 255), 0).mean() > 0.9
    assert tuple(pixels[round(y0 + 2 * size + 3), round(x0 + 2 * size + 3)]) == (255, 255, 255)
    assert tuple(pixels[round(y0 + 3 * size + 3), round(x0 + 2 * size + 3)]) == BLUES[0]


def test_camvid_sized_matrix_and_options(tmp_path: Path) -> None:
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
             "Bicyclist"]
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 500, (11, 11)) + np.diag(rng.integers(5000, 50000, 11))
    for normalize in ("true", "pred", "all", None):
        pixels = _load(plot_confusion_matrix(matrix, names, tmp_path / f"cm_{normalize}.png", normalize=normalize))
        height, width, _ = pixels.shape
        assert 400 <= width <= 1400 and 400 <= height <= 1400
        assert pixels.var() > 0


def test_many_classes_with_long_names(tmp_path: Path) -> None:
    c = 60
    matrix = np.eye(c, dtype=np.int64) * 100 + 1
    pixels = _load(plot_confusion_matrix(matrix, [f"a rather long class name {i}" for i in range(c)],
                                         tmp_path / "cm.png"))
    assert max(pixels.shape[:2]) < 1600
    assert pixels.var() > 0


def test_confusion_input_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((2, 2)), ["a"], tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((2, 2)), ["a", "b"], tmp_path / "x.png", normalize="rows")
    # all zeros: every row blank, still a picture
    assert _load(plot_confusion_matrix(np.zeros((3, 3)), list("abc"), tmp_path / "z.png")).var() > 0


# ------------------------------------------------------------------------------------------ CSV


def test_metrics_csv_round_trip(tmp_path: Path) -> None:
    series = _training_series(20)
    path = write_metrics_csv(series, tmp_path / "metrics.csv")
    back = read_metrics_csv(path)
    assert list(back) == list(series)
    for name in series:
        assert len(back[name]) == len(series[name])
        for (x, y), (bx, by) in zip(series[name], back[name]):
            assert bx == x and by == pytest.approx(y, rel=1e-12)
    plot_curves(back, tmp_path / "from_csv.png")


def test_read_metrics_csv_with_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("iteration,train loss,lr,val mIoU\n"
                    "0,2.5,0.01,\n"
                    "10,2.0,0.009,\n"
                    "20,,0.008,0.41\n"
                    "\n"
                    "30,1.5,0.007,nan\n")
    series = read_metrics_csv(path)
    assert series["train loss"] == [(0.0, 2.5), (10.0, 2.0), (30.0, 1.5)]
    assert series["lr"] == [(0.0, 0.01), (10.0, 0.009), (20.0, 0.008), (30.0, 0.007)]
    assert series["val mIoU"][0] == (20.0, 0.41) and math.isnan(series["val mIoU"][1][1])
    assert read_metrics_csv(_empty(tmp_path)) == {}
    (tmp_path / "bad.csv").write_text("iteration,a\n0,abc\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_metrics_csv(tmp_path / "bad.csv")


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.csv"
    path.write_text("")
    return path


def test_bitmap_font_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow < 10.1 (no ``size=``) or no FreeType: the fixed bitmap font still gives complete pictures."""
    from PIL import ImageFont

    import deeplab.visualize.drawing as plots

    bitmap = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)  # the pre-10.1 default

    def old_load_default(*args, **kwargs):
        if args or kwargs:
            raise TypeError("load_default() takes no arguments")
        return bitmap()

    monkeypatch.setattr(ImageFont, "load_default", old_load_default)
    plots.font.cache_clear()
    try:
        assert not isinstance(plots.font(14), ImageFont.FreeTypeFont)
        assert _load(plot_curves(_training_series(), tmp_path / "c.png")).var() > 0
        assert _load(plot_confusion_matrix(np.eye(5) * 10, list("abcde"), tmp_path / "m.png")).var() > 0
    finally:
        plots.font.cache_clear()
