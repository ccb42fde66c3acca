"""Fully connected CRF post-processing (DeepLab v1/v2's DenseCRF) on predicted probabilities.

Krähenbühl & Koltun's dense CRF with Gaussian edge potentials, run by mean-field inference:

    E(x) = Σ_i −log P(x_i) + Σ_{i<j} μ(x_i, x_j) [ w1 exp(−|p_i − p_j|²/2θα² − |I_i − I_j|²/2θβ²)
                                                 + w2 exp(−|p_i − p_j|²/2θγ²) ]

with the Potts compatibility μ(a, b) = [a ≠ b]: the unary is the network's −log probability (clipped away
from 0), the first pairwise term the *appearance* (bilateral) kernel — nearby pixels of similar colour
prefer one label — the second the *smoothness* (Gaussian) kernel, which removes small isolated regions.

``CRFParams`` defaults to DeepLab v2's published PASCAL VOC setting (ResNet-101 model: 10 iterations,
w2 = 3, θγ = 1, w1 = 4, θα = 67, θβ = 3). DeepLabV3 dropped the CRF; ``benchmarks/crf_voc.py`` measures
what it still buys on top of a DeepLabV3 model.

The CRF itself is the maintained C++ implementation behind ``pydensecrf`` (the ``pydensecrf2`` package,
compiled at install time; ``pip install 'deeplab[crf]'``), imported lazily so the rest of the library
never needs it. It runs on the CPU, one image at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CRFParams", "dense_crf", "PROBABILITY_FLOOR"]

PROBABILITY_FLOOR = 1e-5
"""Probabilities are clipped to at least this before −log, so a hard 0 costs a finite 11.5 nats."""


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF settings; the defaults are DeepLab v2's cross-validated PASCAL VOC values.

    Attributes:
        iterations: mean-field iterations (0 returns the normalised, clipped input probabilities).
        pos_w, pos_xy_std: smoothness (Gaussian) kernel weight w2 and spatial std θγ in pixels.
        bi_w, bi_xy_std, bi_rgb_std: appearance (bilateral) kernel weight w1, spatial std θα in pixels
            and colour std θβ in 0..255 intensity units.
    """

    iterations: int = 10
    pos_w: float = 3.0
    pos_xy_std: float = 1.0
    bi_w: float = 4.0
    bi_xy_std: float = 67.0
    bi_rgb_std: float = 3.0

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, (int, np.integer)) \
                or self.iterations < 0:
            raise ValueError(f"CRF iterations must be a non-negative integer, got {self.iterations!r}")
        for name in ("pos_w", "bi_w"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ValueError(f"CRF {name} must be a finite number >= 0, got {value!r}")
        for name in ("pos_xy_std", "bi_xy_std", "bi_rgb_std"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ValueError(f"CRF {name} must be a finite number > 0, got {value!r}")


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _import_densecrf() -> Any:
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise ImportError("dense_crf needs the pydensecrf2 package (the dense CRF, compiled at install): "
                          "pip install 'deeplab[crf]'") from None
    return densecrf


def dense_crf(image: np.ndarray, probabilities: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Refine class ``probabilities`` (C×H×W) of an RGB ``image`` (H×W×3 uint8) with a dense CRF.

    Returns the CRF's marginals after ``params.iterations`` mean-field steps: a float32 C×H×W array,
    non-negative, summing to 1 over classes at every pixel (take ``argmax(0)`` for labels). The input need
    not be exactly normalised (each pixel is normalised after clipping to ``PROBABILITY_FLOOR``).
    """
    if not isinstance(params, CRFParams):
        raise TypeError(f"params must be a deeplab.crf.CRFParams, got {type(params).__name__}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        what = f"{image.dtype} array of shape {tuple(image.shape)}" if isinstance(image, np.ndarray) \
            else type(image).__name__
        raise ValueError(f"dense_crf: image must be an H×W×3 uint8 RGB array, got {what}")
    if not isinstance(probabilities, np.ndarray) or probabilities.ndim != 3 \
            or not np.issubdtype(probabilities.dtype, np.floating):
        what = f"{probabilities.dtype} array of shape {tuple(probabilities.shape)}" \
            if isinstance(probabilities, np.ndarray) else type(probabilities).__name__
        raise ValueError(f"dense_crf: probabilities must be a C×H×W float array, got {what}")
    classes, height, width = probabilities.shape
    if (height, width) != image.shape[:2]:
        raise ValueError(f"dense_crf: image is {image.shape[0]}×{image.shape[1]} but probabilities are "
                         f"{height}×{width} (C×H×W expected at the image's size)")
    if classes < 1 or height < 1 or width < 1:
        raise ValueError(f"dense_crf: empty probabilities of shape {tuple(probabilities.shape)}")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any():
        raise ValueError("dense_crf: probabilities must be finite and non-negative (softmax the logits first)")
    densecrf = _import_densecrf()

    unary = -np.log(np.clip(probabilities.reshape(classes, -1), PROBABILITY_FLOOR, None)).astype(np.float32)
    crf = densecrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    # Potts compatibility (a number gives PottsCompatibility(w)), diagonal kernels, symmetric normalisation.
    crf.addPairwiseGaussian(sxy=float(params.pos_xy_std), compat=float(params.pos_w))
    crf.addPairwiseBilateral(sxy=float(params.bi_xy_std), srgb=float(params.bi_rgb_std),
                             rgbim=np.ascontiguousarray(image), compat=float(params.bi_w))
    marginals = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32)
    return marginals.reshape(classes, height, width)
