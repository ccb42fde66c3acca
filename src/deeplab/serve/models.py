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
    """``backend``/``precision``: the inference path (``torch`` fp32 by default, batch norm folded — the only
    one whose output stride a request may change; the others run a copy converted at the model's stride);
    int8 runs on ONNX Runtime (or OpenVINO), quantized at start-up on the ``calibration`` images."""

    def __init__(self, path: str | Path, *, backend: str | None = None, precision: str = "fp32",
                 device: str = "cpu", calibration: str | Path | None = None) -> None:
        if precision == "int8":
            backend = backend or "onnxruntime"
        self.path, self.backend_name, self.precision, self.device = Path(path), backend, precision, device
        self.calibration = calibration
        self.runner = None  # the converted model of a non-default path
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

    def load_and_warm(self) -> None:
        """Load the file, run one tiny prediction (first calls pay for kernel selection), then say ready."""
        try:
            self.loaded = load_any(self.path)
            self._prepare_path()
            self.state = "warming"
            self.run_batch([np.zeros((*WARM_UP_SIZE, 3), np.uint8)], (None, (1.0,), False, False))
            self.state = "ready"
            log.info("model %s ready (%s)", self.path, self.loaded.kind)
        except Exception as error:  # the service stays up to say why it is not ready
            self.state = f"failed to load ({error})"
            log.exception("could not load %s", self.path)

    def _prepare_path(self) -> None:
        from ..export.quantize import calibration_for
        from ..export.runtimes import InferencePath, build_runner, exported_runner
        from ..models.folding import fold_batchnorm

        model = self.loaded.model
        if model is None:  # an exported graph runs as it was exported (fp32 or int8)
            if self.backend_name not in (None, "onnxruntime", "openvino") or self.precision != "fp32":
                raise ValueError(f"{self.path}: an .onnx file runs as it was exported, with --backend onnxruntime "
                                 "or openvino")
            self.backend_name = self.backend_name or "onnxruntime"
            self.precision = self.loaded.backend.header.get("precision", "fp32")
            if self.backend_name == "openvino":
                self.runner = exported_runner(self.loaded.backend, "openvino")
            return
        path = InferencePath(self.backend_name or "torch", self.precision)
        if path == InferencePath():
            fold_batchnorm(model, inplace=True)  # exact, and faster
        else:
            images = calibration_for(self.calibration, self.card.normalization, required=path.precision == "int8")
            self.runner = build_runner(model, path, calibration=images)

    @property
    def path_name(self) -> str:
        return f"{self.backend_name or 'torch'} {self.precision}"

    def predictor(self, options: Options) -> Predictor:
        with self.lock:
            if options not in self.predictors:
                output_stride, scales, flip, probabilities = options
                common = dict(device=self.device, scales=scales, flip=flip, tile_above=None,
                              return_probabilities=probabilities)
                if self.runner is None:
                    predictor = Predictor.from_loaded(self.loaded, output_stride=output_stride, **common)
                else:
                    predictor = Predictor(None, backend=self.runner, normalization=self.card.normalization,
                                          class_names=self.card.classes or None, channels_last=False,
                                          align_corners=bool(getattr(self.loaded.model, "align_corners", False)),
                                          **common)
                self.predictors[options] = predictor
            return self.predictors[options]

    @property
    def stride_switchable(self) -> bool:
        return self.loaded is not None and self.loaded.model is not None and self.runner is None

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
                "dataset": card.dataset, "backend": self.path_name.split()[0], "precision": self.path_name.split()[1],
                "architecture": card.config.get("arch"), "backbone": card.config.get("backbone"),
                "output_stride": None if model is None else model.output_stride}


def parse_options(output_stride: int | None, scales: str | None, flip: bool, settings: ServeSettings,
                  pool: ModelPool, probabilities: bool = False) -> Options:
    """A request's test-time options, checked against the operator's limits (400 with the reason)."""
    if output_stride is not None:
        if output_stride not in settings.output_strides:
            raise RequestError(400, f"output_stride must be one of {list(settings.output_strides)}")
        if not pool.stride_switchable:
            raise RequestError(400, f"output_stride needs the torch fp32 backend (this server runs {pool.path_name}, "
                                    "its stride fixed when the model was converted)")
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
