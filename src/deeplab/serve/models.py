"""The model behind the service: loaded once (any file ``-w`` takes), warmed, and run by one Predictor per
combination of test-time options a request may ask for (they share the weights)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Hashable

import numpy as np

from ..inference.loading import LoadedModel, load_any
from ..inference.predictor import Prediction, Predictor
from ..inference.tta import PAPER_SCALES
from .codec import RequestError
from .settings import ServeSettings

log = logging.getLogger("deeplab.serve")
WARM_UP_SIZE = (64, 64)
Options = tuple[int | None, tuple[float, ...], bool, bool]  # (output stride, scales, flip, keep probabilities)


class ModelPool:
    def __init__(self, path: str | Path, *, backend: str | None = None, device: str = "cpu") -> None:
        self.path, self.backend_name, self.device = Path(path), backend, device
        self.loaded: LoadedModel | None = None
        self.state = "loading"
        self.predictors: dict[Hashable, Predictor] = {}
        self.lock = threading.Lock()
        try:
            import av  # noqa: F401  (video uploads need PyAV)
            self.video_ok = True
        except ImportError:
            self.video_ok = False

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def card(self):
        return self.loaded.card

    @property
    def has_torch_model(self) -> bool:
        return self.loaded is not None and self.loaded.model is not None

    def load_and_warm(self) -> None:
        """Load the file, run one tiny prediction (first calls pay for kernel selection), then say ready."""
        try:
            self.loaded = load_any(self.path)
            if self.backend_name == "onnxruntime" and self.loaded.kind != "onnx":
                raise ValueError(f"{self.path}: --backend onnxruntime runs .onnx files")
            self.state = "warming"
            self.run_batch([np.zeros((*WARM_UP_SIZE, 3), np.uint8)], (None, (1.0,), False, False))
            self.state = "ready"
            log.info("model %s ready (%s)", self.path, self.loaded.kind)
        except Exception as error:  # the service stays up to say why it is not ready
            self.state = f"failed to load ({error})"
            log.exception("could not load %s", self.path)

    def predictor(self, options: Options) -> Predictor:
        with self.lock:
            if options not in self.predictors:
                output_stride, scales, flip, probabilities = options
                self.predictors[options] = Predictor.from_loaded(self.loaded, device=self.device,
                                                                 output_stride=output_stride, scales=scales,
                                                                 flip=flip, tile_above=None,
                                                                 return_probabilities=probabilities)
            return self.predictors[options]

    def run_batch(self, images: list[np.ndarray], options: Options) -> list[Prediction]:
        """One forward pass for equal-size images (called on the inference thread)."""
        predictor = self.predictor(options)
        predictor.batch_size = len(images)
        return predictor.predict(images)

    def describe(self) -> dict[str, Any]:
        card = self.card
        model = self.loaded.model
        return {"file": self.path.name, "kind": self.loaded.kind, "classes": list(card.classes),
                "palette": None if card.palette is None else [list(c) for c in card.palette],
                "ignore_index": card.ignore_index, "normalization": card.normalization.to_dict(),
                "dataset": card.dataset, "backend": "onnxruntime" if model is None else "torch",
                "architecture": card.config.get("arch"), "backbone": card.config.get("backbone"),
                "output_stride": None if model is None else model.output_stride}


def parse_options(output_stride: int | None, scales: str | None, flip: bool, settings: ServeSettings,
                  pool: ModelPool, probabilities: bool = False) -> Options:
    """A request's test-time options, checked against the operator's limits (400 with the reason)."""
    if output_stride is not None:
        if output_stride not in settings.output_strides:
            raise RequestError(400, f"output_stride must be one of {list(settings.output_strides)}")
        if not pool.has_torch_model:
            raise RequestError(400, "output_stride needs the torch backend (an ONNX graph has its stride baked in)")
    if scales in (None, ""):
        scale_list: tuple[float, ...] = (1.0,)
    elif scales == "paper":
        scale_list = PAPER_SCALES
    else:
        try:
            scale_list = tuple(float(v) for v in scales.split(","))
        except ValueError:
            raise RequestError(400, f"scales must be comma-separated numbers or 'paper', got {scales!r}") from None
        if any(not 0.25 <= s <= 2.0 for s in scale_list):
            raise RequestError(400, "scales must be between 0.25 and 2")
    if len(scale_list) > settings.max_scales:
        raise RequestError(400, f"at most {settings.max_scales} scale(s) per request")
    if flip and not settings.allow_flip:
        raise RequestError(400, "flip is not allowed on this server")
    return output_stride, scale_list, bool(flip), probabilities
