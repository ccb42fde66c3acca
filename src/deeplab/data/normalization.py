"""Pixel normalisation, defined once: ``Normalization`` (``(x / scale − mean) / std`` per RGB channel) and the
two conventions in use, ``IMAGENET`` and ``SIGNED_UNIT``.

The same arithmetic serves training (``normalize_array`` on an H×W×3 image, before the crop pads with the
mean pixel), inference (``to_tensor`` on a batch, on the device) and the exported graph (which traces the
same order of operations); a test checks the three give identical numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalization:
    """Pixel normalisation ``(x / scale − mean) / std`` per RGB channel, on uint8 images.

    ``mean`` and ``std`` are given on the ``x / scale`` range (the torchvision convention: on [0, 1] images
    for ``scale=255``), which is also how model files store them (``ModelCard``).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 255.0

    def __post_init__(self) -> None:
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got mean={self.mean!r} std={self.std!r}")
        if any(not math.isfinite(s) or s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {self.std!r}")
        if not math.isfinite(float(self.scale)) or float(self.scale) <= 0:
            raise ValueError(f"scale must be positive, got {self.scale!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Normalization":
        """From ``{"mean": [...], "std": [...], "scale": 255}`` (``scale`` optional), as model files store it."""
        if "mean" not in values or "std" not in values:
            raise ValueError("normalisation needs 'mean' and 'std'")
        return cls(tuple(values["mean"]), tuple(values["std"]), float(values.get("scale", 255.0)))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}

    def apply(self, x: Tensor, channel_dim: int = 1) -> Tensor:
        """Normalise a float tensor in place along ``channel_dim`` (the one implementation of the arithmetic)."""
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return x.div_(self.scale).sub_(mean).div_(std)

    def normalize_array(self, image: np.ndarray) -> np.ndarray:
        """An H×W×3 image (uint8 or float) → a normalised float32 H×W×3 array (training's transform)."""
        array = np.array(image, dtype=np.float32)  # a copy: normalised in place below
        self.apply(torch.from_numpy(array), channel_dim=-1)
        return array

    def to_tensor(self, images: np.ndarray | Sequence[np.ndarray], device: torch.device | str | None = None) -> Tensor:
        """uint8 images → float32 N×3×H×W, normalised.

        ``images``: one H×W×3 array, an N×H×W×3 array, or a sequence of H×W×3 arrays of one size. The uint8
        data is moved to ``device`` first, so the conversion runs there (4× less to transfer).
        """
        batch = stack_images(images)
        if not batch.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only arrays
            batch = batch.copy()
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()
        return self.apply(x).contiguous()


IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
"""ImageNet statistics on x/255 — torchvision's backbones and the MobileNetV2 ImageNet weights."""

SIGNED_UNIT = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
"""x/127.5 − 1: the TensorFlow DeepLab convention (e.g. the imported TFLite model)."""


def check_image(image: Any, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: expected an H×W×3 RGB image, got shape {tuple(image.shape)} "
                         "(deeplab.data.io.read_image gives the right layout)")
    if image.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 pixels (0..255), got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where}: empty image of shape {tuple(image.shape)}")
    return image


def stack_images(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return check_image(images, "image")[None]
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise ValueError("no images to convert")
            check_image(images[0], "images[0]")
            return np.ascontiguousarray(images)
        raise ValueError(f"expected an H×W×3 image or an N×H×W×3 batch, got shape {tuple(images.shape)}")
    images = [check_image(image, f"images[{i}]") for i, image in enumerate(images)]
    if not images:
        raise ValueError("no images to convert")
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)} cannot share a tensor; batch equal sizes "
                         "(Predictor does this by bucketing)")
    return np.stack(images)
