"""Pictures: label maps as palette images and overlays, training curves and confusion-matrix heatmaps,
written as PNG/JPEG atomically. Drawn with Pillow only (no matplotlib).

- ``palette.py``: ``voc_colormap``, ``label_image``, ``colorize``, ``overlay``, ``side_by_side``;
- ``images.py``: ``save_png``, ``save_jpeg``, ``encode``;
- ``curves.py``: ``plot_curves`` — line charts (loss, learning rate, val mIoU, ...) in panels;
- ``bars.py``: ``plot_bars`` — horizontal bar charts (benchmark figures);
- ``confusion.py``: ``plot_confusion_matrix`` — a normalised heatmap with class names on both axes;
- ``drawing.py``: what the plots share (colours, fonts, text placement, tick values and labels).
"""

from .bars import plot_bars
from .confusion import plot_confusion_matrix
from .curves import plot_curves
from .images import encode, save_jpeg, save_png
from .palette import colorize, label_image, overlay, side_by_side, voc_colormap

__all__ = ["colorize", "encode", "label_image", "overlay", "plot_bars", "plot_confusion_matrix", "plot_curves", "save_jpeg",
           "save_png", "side_by_side", "voc_colormap"]
