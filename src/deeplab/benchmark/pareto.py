"""Accuracy against time, for choosing a setting: every inference strategy (output stride, scales, flip, CRF)
crossed with every inference path (backend × precision), each scored on real labels and timed on one image.

mIoU comes from a full pass over the labelled images (the dataset-level confusion matrix of ``evaluate``);
ms/image from round-robin timing of all settings on the first image (after a warm-up call of each, which
also compiles what the runtimes compile per shape), so a change in machine load hits every setting alike.
The Pareto front is the settings no other beats on both counts: for a time budget, the best one is the
most accurate front point under it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..crf import dense_crf
from ..data.dataset import SegmentationDataset
from ..export.runtimes import InferencePath, build_runner
from ..inference.evaluation import evaluate
from ..inference.loading import LoadedModel
from ..inference.predictor import Prediction, Predictor
from ..inference.tta import PAPER_SCALES
from .measure import time_round_robin


@dataclass(frozen=True)
class Strategy:
    """What the paper varies at test time: output stride, scales, left-right flip, and the dense CRF."""

    output_stride: int
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: bool = False

    @property
    def name(self) -> str:
        scales = "" if self.scales == (1.0,) else " MS" if self.scales == PAPER_SCALES else f" scales {self.scales}"
        return f"OS{self.output_stride}{scales}{' +flip' if self.flip else ''}{' +CRF' if self.crf else ''}"


def default_strategies(crf: bool) -> list[Strategy]:
    """Output stride 16 and 8, each at one scale, with flip, and the paper's six scales with flip; with
    ``crf`` every one of them again followed by the dense CRF."""
    plain = [Strategy(os, scales, flip) for os in (16, 8)
             for scales, flip in (((1.0,), False), ((1.0,), True), (PAPER_SCALES, True))]
    return plain + ([Strategy(s.output_stride, s.scales, s.flip, crf=True) for s in plain] if crf else [])


def pareto_front(ms: Sequence[float], score: Sequence[float]) -> list[bool]:
    """True for each point that no other point dominates (at most as slow and at least as accurate, better
    in one of the two)."""
    points = list(zip(ms, score))
    return [not any(t <= m and s >= a and (t < m or s > a) for t, s in points) for m, a in points]


@dataclass
class TradeoffRow:
    path: str
    strategy: Strategy
    miou: float
    ms: float
    min_ms: float
    on_front: bool = False

    def as_dict(self) -> dict[str, Any]:
        s = self.strategy
        return {"path": self.path, "strategy": s.name, "output_stride": s.output_stride, "scales": list(s.scales),
                "flip": s.flip, "crf": s.crf, "miou": self.miou, "ms": self.ms, "min_ms": self.min_ms,
                "pareto": self.on_front}


def crf_labels(image: np.ndarray, prediction: Prediction) -> np.ndarray:
    """The dense CRF (DeepLab v2's VOC settings) after the network, as ``evaluate``'s postprocess."""
    return dense_crf(image, prediction.probabilities).argmax(0)


def measure_tradeoffs(loaded: LoadedModel, dataset: SegmentationDataset, paths: Sequence[InferencePath],
                      strategies: Sequence[Strategy], *, limit: int | None = None,
                      calibration: Sequence[torch.Tensor] = (), threads: int | None = None, repeats: int = 3,
                      progress: Callable[[str], None] = lambda _: None) -> list[TradeoffRow]:
    """One row per (path, strategy): mIoU on the first ``limit`` images of ``dataset``, ms/image on its first."""
    model, card = loaded.model, loaded.card
    if model is None:
        raise ValueError("the trade-off table needs the torch model (an exported graph has its stride baked in)")
    settings: dict[str, tuple[InferencePath, Strategy, Predictor]] = {}
    runners: dict[tuple[InferencePath, int], Any] = {}
    for path in paths:
        for strategy in strategies:
            key = (path, strategy.output_stride)
            if key not in runners:
                progress(f"building {path.name} at OS{strategy.output_stride}")
                with model.at_output_stride(strategy.output_stride):
                    runners[key] = build_runner(model, path, threads=threads, calibration=calibration)
            predictor = Predictor(None, backend=runners[key], normalization=card.normalization,
                                  class_names=card.classes or None, scales=strategy.scales, flip=strategy.flip,
                                  align_corners=bool(getattr(model, "align_corners", False)), channels_last=False,
                                  batch_size=1, return_probabilities=strategy.crf, tile_above=None)
            settings[f"{path.name} | {strategy.name}"] = (path, strategy, predictor)
    scores = {}
    for i, (name, (_, strategy, predictor)) in enumerate(settings.items()):
        progress(f"scoring {i + 1}/{len(settings)}: {name}")
        result = evaluate(predictor, dataset, postprocess=crf_labels if strategy.crf else None, limit=limit,
                          progress=False)
        scores[name] = 100 * result.matrix.miou
    image = dataset.read(0).image
    progress(f"timing {len(settings)} settings round-robin on {dataset.read(0).image_path.name}")

    def labels_of(strategy: Strategy, predictor: Predictor) -> Callable[[Any], np.ndarray]:
        def run(_: Any) -> np.ndarray:
            prediction = predictor.predict([image])[0]
            return crf_labels(image, prediction) if strategy.crf else prediction.labels
        return run

    times = time_round_robin({name: labels_of(strategy, predictor) for name, (_, strategy, predictor)
                              in settings.items()}, None, warmup=1, repeats=repeats)  # type: ignore[arg-type]
    rows = [TradeoffRow(path.name, strategy, scores[name], 1000 * statistics.median(times[name]),
                        1000 * min(times[name])) for name, (path, strategy, _) in settings.items()]
    for row, front in zip(rows, pareto_front([r.ms for r in rows], [r.miou for r in rows])):
        row.on_front = front
    return rows


def table(rows: Sequence[TradeoffRow]) -> str:
    header = f"{'path':<18} {'strategy':<22} {'mIoU %':>7} {'ms/image':>9} {'min ms':>8}  Pareto"
    lines = [header, "-" * len(header)]
    for r in sorted(rows, key=lambda r: r.ms):
        lines.append(f"{r.path:<18} {r.strategy.name:<22} {r.miou:>7.2f} {r.ms:>9.1f} {r.min_ms:>8.1f}  "
                     f"{'*' if r.on_front else ''}")
    return "\n".join(lines)
