"""Joint image/label transforms on numpy arrays: image H×W×3 (uint8, float32 after ``Normalize``), label H×W int64.

Training (the paper's recipe, plus two options): photometric jitter (optional) → random scale in [0.5, 2.0] →
random rotation (optional) → random left-right flip → normalise → random crop → tensors. Evaluation:
normalise → tensors, at full resolution.

- Masks are only ever resampled nearest-neighbour: a label value never appears that was not in the input
  (a bilinear resize would invent classes along every boundary).
- Crops pad the label with the ignore value and the image with 0 *after* normalisation, i.e. with the mean
  pixel (the paper's "pad with mean"); that is why ``Normalize`` comes before ``RandomCrop``.
- Randomness comes from a ``torch.Generator`` given to the transforms (torch's global RNG when none is).
  Training reseeds that generator before every sample from (seed, epoch, index) — see
  ``deeplab.training.sampler.AugmentedDataset`` — so a sample's augmentation depends neither on the worker
  that draws it nor on where a resumed run started.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

from .normalization import IMAGENET, Normalization

UINT8_MAX = 255.0

Label = np.ndarray | None
Pair = tuple[np.ndarray, Label]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator).item()) if high > 1 else 0


def resize_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize by indexing (pixel centres aligned, as Pillow does for the image)."""
    rows = np.minimum(((np.arange(height) + 0.5) * label.shape[0] / height).astype(np.int64), label.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * label.shape[1] / width).astype(np.int64), label.shape[1] - 1)
    return label[rows[:, None], cols[None, :]]


def rotate_pair(image: np.ndarray, label: Label, angle: float, fill: tuple[int, int, int] = (0, 0, 0),
                ignore_index: int = 255) -> Pair:
    """Rotate a uint8 image (bilinear) and its label (nearest) ``angle`` degrees anticlockwise about the centre.

    The frame keeps its size; uncovered corners get ``fill`` in the image and ``ignore_index`` in the label.
    """
    image = np.asarray(Image.fromarray(image).rotate(angle, Image.Resampling.BILINEAR, fillcolor=tuple(fill)))
    if label is not None:
        rotated = Image.fromarray(label.astype(np.int32)).rotate(angle, Image.Resampling.NEAREST,
                                                                  fillcolor=ignore_index)
        label = np.asarray(rotated).astype(label.dtype)
    return image, label


class Compose:
    def __init__(self, transforms: list[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, label: Label) -> Pair:
        for transform in self.transforms:
            image, label = transform(image, label)
        return image, label

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


class RandomScale:
    """Resize by a factor drawn uniformly from [low, high]: image bilinear (uint8), label nearest."""

    def __init__(self, low: float = 0.5, high: float = 2.0, generator: torch.Generator | None = None) -> None:
        if not 0 < low <= high:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got ({low}, {high})")
        self.low, self.high, self.generator = low, high, generator

    def __call__(self, image: np.ndarray, label: Label) -> Pair:
        factor = _uniform(self.low, self.high, self.generator)
        height = max(1, round(image.shape[0] * factor))
        width = max(1, round(image.shape[1] * factor))
        if image.dtype != np.uint8:
            raise TypeError("RandomScale expects a uint8 image (put it before Normalize)")
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        return image, None if label is None else resize_nearest(label, height, width)

    def __repr__(self) -> str:
        return f"RandomScale({self.low}, {self.high})"


class RandomRotate:
    """Rotate about the centre by an angle drawn uniformly from [-degrees, degrees], keeping the frame's size.

    The image is resampled bilinearly, the label nearest-neighbour by the same affine map; the corners the
    rotation uncovers get ``fill`` in the image (the mean pixel rounded to uint8, so they normalise to about 0,
    like the crop's padding) and ``ignore_index`` in the label, so they never count in the loss.
    """

    def __init__(self, degrees: float, fill: tuple[int, int, int] = (0, 0, 0), ignore_index: int = 255,
                 generator: torch.Generator | None = None) -> None:
        if not 0 < degrees <= 180:
            raise ValueError(f"rotation range must be in (0, 180] degrees, got {degrees}")
        self.degrees, self.fill, self.ignore_index, self.generator = degrees, tuple(fill), ignore_index, generator

    def __call__(self, image: np.ndarray, label: Label) -> Pair:
        if image.dtype != np.uint8:
            raise TypeError("RandomRotate expects a uint8 image (put it before Normalize)")
        angle = _uniform(-self.degrees, self.degrees, self.generator)
        return rotate_pair(image, label, angle, self.fill, self.ignore_index)

    def __repr__(self) -> str:
        return f"RandomRotate({self.degrees}, fill={self.fill}, ignore_index={self.ignore_index})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p, self.generator = p, generator

    def __call__(self, image: np.ndarray, label: Label) -> Pair:
        if _uniform(0.0, 1.0, self.generator) < self.p:
            image = image[:, ::-1]
            label = None if label is None else label[:, ::-1]
        return image, label

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop:
    """A ``size`` crop at a random place; smaller inputs are first padded at the bottom/right.

    The image is padded with ``fill`` (0 = the mean pixel once normalised), the label with ``ignore_index``,
    so padding never counts in the loss or the metrics.
    """

    def __init__(self, size: int | tuple[int, int], ignore_index: int = 255, fill: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if min(self.size) < 1:
            raise ValueError(f"crop size must be positive, got {size}")
        self.ignore_index, self.fill, self.generator = ignore_index, fill, generator

    def __call__(self, image: np.ndarray, label: Label) -> Pair:
        crop_h, crop_w = self.size
        height, width = image.shape[:2]
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=self.fill)
            if label is not None:
                label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_index)
        top = _randint(image.shape[0] - crop_h + 1, self.generator)
        left = _randint(image.shape[1] - crop_w + 1, self.generator)
        image = image[top:top + crop_h, left:left + crop_w]
        return image, None if label is None else label[top:top + crop_h, left:left + crop_w]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, ignore_index={self.ignore_index}, fill={self.fill})"


class PhotometricJitter:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x], on the uint8 image."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 generator: torch.Generator | None = None) -> None:
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.generator = generator

    def __call__(self, image: np.ndarray, label: Label) -> Pair:
        factors = [_uniform(1 - x, 1 + x, self.generator) for x in (self.brightness, self.contrast, self.saturation)]
        out = image.astype(np.float32) * factors[0]
        gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow
        out = (out - gray.mean()) * factors[1] + gray.mean()
        gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        out = (out - gray[..., None]) * factors[2] + gray[..., None]
        return np.clip(np.round(out), 0, UINT8_MAX).astype(np.uint8), label

    def __repr__(self) -> str:
        return f"PhotometricJitter({self.brightness}, {self.contrast}, {self.saturation})"


class Normalize:
    """uint8 image → float32 ``(x / scale − mean) / std`` per channel (``Normalization.normalize_array``)."""

    def __init__(self, normalization: Normalization = IMAGENET) -> None:
        self.normalization = normalization

    def __call__(self, image: np.ndarray, label: Label) -> Pair:
        return self.normalization.normalize_array(image), label

    def __repr__(self) -> str:
        return f"Normalize(mean={list(self.normalization.mean)}, std={list(self.normalization.std)})"


class ToTensor:
    """Image → C×H×W float32 tensor (a uint8 image is scaled to [0, 1]); label → H×W int64 tensor."""

    def __call__(self, image: np.ndarray, label: Label) -> tuple[torch.Tensor, torch.Tensor | None]:
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        tensor = tensor.float() / UINT8_MAX if tensor.dtype == torch.uint8 else tensor.float()
        target = None if label is None else torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
        return tensor, target

    def __repr__(self) -> str:
        return "ToTensor()"


def train_transforms(crop_size: int | tuple[int, int], scale_range: tuple[float, float] = (0.5, 2.0),
                     normalization: Normalization = IMAGENET, ignore_index: int = 255, jitter: bool = False,
                     generator: torch.Generator | None = None, flip: bool = True,
                     rotate_degrees: float = 0.0) -> Compose:
    """The paper's augmentation: [jitter] → random scale → [rotation] → [flip] → normalise → random crop → tensors.

    ``rotate_degrees`` > 0 adds a rotation by up to that many degrees either way (not in the paper: an
    extra geometry augmentation for small datasets).
    """
    steps: list[Callable] = [PhotometricJitter(generator=generator)] if jitter else []
    steps.append(RandomScale(*scale_range, generator=generator))
    if rotate_degrees:
        mean_pixel = tuple(int(np.clip(round(m * normalization.scale), 0, UINT8_MAX)) for m in normalization.mean)
        steps.append(RandomRotate(rotate_degrees, mean_pixel, ignore_index, generator=generator))
    if flip:
        steps.append(RandomHorizontalFlip(generator=generator))
    steps += [Normalize(normalization), RandomCrop(crop_size, ignore_index, fill=0.0, generator=generator),
              ToTensor()]
    return Compose(steps)
