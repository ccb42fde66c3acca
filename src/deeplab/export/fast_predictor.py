"""A ``Predictor`` on the inference path the user asked for — or, with ``auto``, on the fastest one this
machine offers within a declared tolerance, measured here on the user's own image and said out loud.

The default (``torch``, ``fp32``) is exact: batch norm is folded into the convolutions of the loaded model
itself, which stays a DeepLab (its output stride can still be switched per call). Other paths run a converted
copy built at the requested output stride.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..inference.loading import LoadedModel
from ..inference.predictor import Predictor
from ..models.folding import fold_batchnorm
from ..utils.machine import has_fast_bf16
from ..utils.optional import MissingDependencyError
from .runtimes import BACKENDS, InferencePath, build_runner, exported_runner

AUTO_MIN_AGREEMENT = 0.995  # auto never picks a path whose labels differ from fp32's on more pixels than this
AUTO_RUNS = 3


def candidates(backend: str, precision: str, *, int8: bool = False) -> list[InferencePath]:
    """The paths ``auto`` chooses among (an explicit backend or precision pins that part); ``int8`` adds the
    int8 paths of ONNX Runtime and OpenVINO (they need calibration images) — like every candidate, only chosen
    within the tolerance."""
    backends = list(BACKENDS) if backend == "auto" else [backend]
    precisions = (["fp32", "bf16"] if has_fast_bf16() else ["fp32"]) if precision == "auto" else [precision]
    if int8 and precision == "auto":
        precisions.append("int8")
    return [InferencePath(b, p) for b in backends for p in precisions
            if not (b == "onnxruntime" and p == "bf16") and not (p == "int8" and b == "torch")]


def _seconds(run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> float:
    run(x)  # warm-up (OpenVINO and ONNX Runtime plan their kernels on the first call)
    times = []
    for _ in range(AUTO_RUNS):
        began = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def choose_path(loaded: LoadedModel, options: Iterable[InferencePath], sample: np.ndarray, *,
                output_stride: int | None = None, threads: int | None = None,
                notify: Callable[[str], Any] = print, calibration: Sequence[torch.Tensor] = ()) -> InferencePath:
    """Time each path on ``sample`` (an H×W×3 image) and return the fastest whose labels agree with fp32
    eager on at least ``AUTO_MIN_AGREEMENT`` of its pixels."""
    model = loaded.model
    x = loaded.card.normalization.to_tensor(sample)
    with torch.inference_mode(), model.at_output_stride(output_stride):
        reference = model(x).argmax(1)
        results = []
        for path in options:
            try:
                runner = build_runner(model, path, threads=threads, calibration=calibration)
            except (MissingDependencyError, ImportError) as error:
                notify(f"auto: {path.name} unavailable ({error})")
                continue
            agreement = float((runner(x).argmax(1) == reference).double().mean())
            results.append((path, _seconds(runner, x), agreement))
    allowed = [r for r in results if r[2] >= AUTO_MIN_AGREEMENT]
    best = min(allowed, key=lambda r: r[1])
    notify("auto: " + ", ".join(f"{p.name} {1000 * s:.0f} ms ({100 * a:.2f} % agree)" for p, s, a in results)
           + f" → {best[0].name}")
    return best[0]


def fast_predictor(loaded: LoadedModel, path: InferencePath, *, output_stride: int | None = None,
                   threads: int | None = None, calibration: Sequence[torch.Tensor] = (),
                   **kwargs: Any) -> Predictor:
    """A Predictor for ``loaded`` on ``path``; ``kwargs`` go to the Predictor (scales, flip, tile, ...)."""
    if loaded.model is None:  # an exported graph: it runs as it was exported, on ONNX Runtime or OpenVINO
        backend = exported_runner(loaded.backend, path.backend, threads)
        return Predictor.from_loaded(loaded, output_stride=output_stride, backend=backend, **kwargs)
    if path == InferencePath("torch", "fp32"):
        fold_batchnorm(loaded.model, inplace=True)
        return Predictor.from_loaded(loaded, output_stride=output_stride, **kwargs)
    model = loaded.model
    with model.at_output_stride(output_stride):
        runner = build_runner(model, path, threads=threads, calibration=calibration)
    kwargs.setdefault("normalization", loaded.card.normalization)
    kwargs.setdefault("class_names", loaded.card.classes or None)
    return Predictor(None, backend=runner, align_corners=bool(getattr(model, "align_corners", False)),
                     channels_last=False, **kwargs)
