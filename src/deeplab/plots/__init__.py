"""Training curves and confusion-matrix heatmaps as PNGs, drawn with Pillow only (no matplotlib).

* :func:`plot_curves` — line charts (loss, learning rate, val mIoU, ...) in one or more panels
  (``curves.py``).
* :func:`plot_confusion_matrix` — a row-normalised heatmap with class names on both axes (``confusion.py``).
* :func:`read_metrics_csv` / :func:`write_metrics_csv` — the ``iteration,<metric>,...`` CSV the curves
  come from (an empty cell means "no value at that iteration") (``metrics_csv.py``).
* ``drawing.py`` — what both plots share: colours, fonts, text placement, tick values and labels.

Writes are atomic (:func:`deeplab.visualize.save_png`).
"""

from .confusion import plot_confusion_matrix
from .curves import plot_curves
from .drawing import (AXIS, BLUES, COLOURS, GRID, MUTED, SUPERSAMPLE, TEXT, WHITE, font, format_ticks,
                      nice_ticks)
from .metrics_csv import Series, read_metrics_csv, write_metrics_csv

__all__ = ["AXIS", "BLUES", "COLOURS", "GRID", "MUTED", "SUPERSAMPLE", "Series", "TEXT", "WHITE", "font",
           "format_ticks", "nice_ticks", "plot_confusion_matrix", "plot_curves", "read_metrics_csv",
           "write_metrics_csv"]
