"""What a run leaves to read and look at: ``metrics.csv``, ``curves.png``, ``confusion_matrix.png``,
``eval.json`` (per-class IoU), ``result.json``, and TensorBoard events when TensorBoard is installed.

Only rank 0 writes (``enabled``). On resume the logged rows past the checkpoint's step are dropped, so the
CSV matches the training that actually continues.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..utils.files import atomic_write_bytes
from ..metrics import ConfusionMatrix
from ..visualize import plot_confusion_matrix, plot_curves
from .metrics_csv import read_metrics_csv, write_metrics_csv

PANELS = [["train loss"], ["lr"], ["val mIoU", "val pixel acc"]]
LIVE_MIOU = "val mIoU (live weights)"  # with weight averaging "val mIoU" is the average's


class Logbook:
    def __init__(self, run_dir: Path, class_names: Sequence[str], *, enabled: bool = True,
                 resume_from: int = 0) -> None:
        self.run_dir, self.class_names, self.enabled = Path(run_dir), list(class_names), enabled
        self.csv = self.run_dir / "metrics.csv"
        self.series: dict[str, list[tuple[float, float]]] = {"train loss": [], "lr": [], "images/s": [],
                                                             "loader wait": [], "val mIoU": [], "val pixel acc": []}
        if enabled and resume_from and self.csv.is_file():
            for name, points in read_metrics_csv(self.csv).items():
                self.series[name] = [(x, y) for x, y in points if x <= resume_from]
        self.tensorboard = _tensorboard(self.run_dir) if enabled else None

    def training(self, step: int, loss: float, lr: float, images_per_second: float, loader_wait: float = 0.0) -> None:
        self._add(step, {"train loss": loss, "lr": lr, "images/s": images_per_second, "loader wait": loader_wait})
        if self.enabled:
            write_metrics_csv(self.series, self.csv)

    def evaluation(self, step: int, matrix: ConfusionMatrix, live_miou: float | None = None) -> None:
        if not self.enabled:
            return
        summary = matrix.summary(self.class_names)
        self._add(step, {"val mIoU": summary["miou"], "val pixel acc": summary["pixel_accuracy"],
                         **({} if live_miou is None else {LIVE_MIOU: live_miou})})
        write_metrics_csv(self.series, self.csv)
        record = {"step": step, **summary, "confusion_matrix": matrix.matrix.tolist()}  # rows: truth, cols: prediction
        atomic_write_bytes(self.run_dir / "eval.json", json.dumps(record, indent=2).encode())
        plot_confusion_matrix(matrix.matrix.numpy(), self.class_names, self.run_dir / "confusion_matrix.png")
        self.plot()

    def plot(self) -> None:
        panels = [*PANELS[:-1], [*PANELS[-1], LIVE_MIOU]] if self.series.get(LIVE_MIOU) else PANELS
        plot_curves(self.series, self.run_dir / "curves.png", title=self.run_dir.name, panels=panels)

    def finish(self, result: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.plot()
        atomic_write_bytes(self.run_dir / "result.json", json.dumps(result, indent=2, default=float).encode())
        self.close()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _add(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.series.setdefault(name, []).append((float(step), float(value)))
            if self.tensorboard is not None:
                self.tensorboard.add_scalar(name.replace(" ", "_"), value, step)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional: pip install 'deeplab[tensorboard]'
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
