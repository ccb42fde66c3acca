"""Inference: normalisation, test-time augmentation, sliding windows and a batching ``Predictor``.

The evaluation protocol of the paper (SPEC §4): train at output stride 16 and evaluate at 8 with the same
weights; optionally feed the image at several scales ({0.5, 0.75, 1.0, 1.25, 1.5, 1.75}, ``PAPER_SCALES``)
and left-right flipped, and average the class *probabilities* of all passes.

- ``Normalization``: uint8 H×W×3 images → a normalised float N×3×H×W tensor (``IMAGENET``, ``SIGNED_UNIT``).
- ``predict_logits``: class probabilities averaged over scales × flips at the input resolution, each pass
  optionally by sliding window (``tile``) for images too large to run whole.
- ``Predictor``: numpy images in, ``Prediction`` (labels, probabilities, areas) out; images of different
  sizes are batched by bucketing equal sizes together — never by padding, which would change what the
  image-pooling branch averages and so the predictions.

Every forward pass runs under ``torch.inference_mode()`` with the model in eval mode.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IMAGENET", "PAPER_SCALES", "SIGNED_UNIT", "Normalization", "Prediction", "Predictor",
           "predict_logits", "predict_probabilities", "sliding_window_probabilities"]

PAPER_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
"""The paper's multi-scale inference scales (§4, used with left-right flipping)."""

ForwardFn = Callable[[Tensor], Any]  # normalised N×3×H×W float → N×C×h×w logits (tensor or array)


# --- normalisation ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Normalization:
    """Pixel normalisation ``(x / scale − mean) / std`` per RGB channel, on uint8 images.

    ``mean`` and ``std`` are given on the ``x / scale`` range (the torchvision convention: on [0, 1] images
    for ``scale=255``), which is also how ``save_model`` metadata stores them.
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
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "Normalization":
        """From ``save_model`` metadata (``mean``, ``std`` and optionally ``scale``)."""
        if "mean" not in metadata or "std" not in metadata:
            raise ValueError("the model file's metadata has no 'mean'/'std'; pass normalization= explicitly "
                             "(e.g. deeplab.inference.IMAGENET or SIGNED_UNIT)")
        return cls(tuple(metadata["mean"]), tuple(metadata["std"]), float(metadata.get("scale", 255.0)))

    def to_tensor(self, images: np.ndarray | Sequence[np.ndarray], device: torch.device | str | None = None) -> Tensor:
        """uint8 images → float32 N×3×H×W, normalised.

        ``images``: one H×W×3 array, an N×H×W×3 array, or a sequence of H×W×3 arrays of one size. The uint8
        data is moved to ``device`` first, so the conversion runs there (4× less to transfer).
        """
        batch = _stack_images(images)
        if not batch.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only arrays
            batch = batch.copy()
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.div_(self.scale).sub_(mean).div_(std).contiguous()


IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
"""ImageNet statistics on x/255 — torchvision's backbones and the MobileNetV2 ImageNet weights."""

SIGNED_UNIT = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
"""x/127.5 − 1: the TensorFlow DeepLab convention (e.g. the imported TFLite model)."""


def _check_image(image: Any, where: str) -> np.ndarray:
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


def _stack_images(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return _check_image(images, "image")[None]
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise ValueError("no images to convert")
            _check_image(images[0], "images[0]")
            return np.ascontiguousarray(images)
        raise ValueError(f"expected an H×W×3 image or an N×H×W×3 batch, got shape {tuple(images.shape)}")
    images = [_check_image(image, f"images[{i}]") for i, image in enumerate(images)]
    if not images:
        raise ValueError("no images to convert")
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)} cannot share a tensor; batch equal sizes "
                         "(Predictor does this by bucketing)")
    return np.stack(images)


# --- probabilities with test-time augmentation and sliding windows ----------------------------------------

def _logits(forward: ForwardFn, x: Tensor, amp: bool) -> Tensor:
    """One forward pass → float32 N×C×H×W logits at ``x``'s size, whatever the callable returns."""
    if amp and x.device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            out = forward(x)
    else:  # never touch CUDA on the CPU path
        out = forward(x)
    if isinstance(out, Mapping):  # torchvision-style {"out": ...}
        out = out["out"]
    elif isinstance(out, (tuple, list)):  # (logits, aux) of a model left in training mode
        out = out[0]
    out = torch.as_tensor(out, device=x.device)  # an ONNX runtime wrapper may hand back numpy
    if out.dim() != 4 or out.shape[0] != x.shape[0]:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                         "expected N×C×H×W logits")
    out = out.float()
    if out.shape[-2:] != x.shape[-2:]:  # e.g. a backend returning stride-8 logits
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out


def _window_starts(size: int, tile: int, stride: int) -> list[int]:
    """Window origins along one axis: the fewest windows whose step is at most ``stride``, spread evenly
    from 0 to ``size − tile`` (so no window nearly duplicates its neighbour at the end)."""
    if size <= tile:
        return [0]
    count = -(-(size - tile) // stride) + 1
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def sliding_window_probabilities(forward: ForwardFn, x: Tensor, tile: int, *, overlap: float = 1 / 3,
                                 window_batch_size: int = 4, amp: bool = False) -> Tensor:
    """Softmax probabilities of ``x`` (N×3×H×W, normalised) from tile×tile windows.

    Windows step by at most ``round(tile × (1 − overlap))``, evenly spread, the first and last flush with
    the borders; a dimension shorter than ``tile`` is zero-padded (after normalisation, at the
    bottom/right) and cropped back.
    Probabilities are summed into an N×C×H×W accumulator with a per-pixel count of windows and divided
    by it; windows run ``window_batch_size`` at a time, so activation memory is that of a few tiles
    whatever the image size. An image that fits in one tile is run whole (no padding): the result is then
    exactly the untiled one.
    """
    n, _, height, width = x.shape
    if height <= tile and width <= tile:
        return torch.softmax(_logits(forward, x, amp), dim=1)
    stride = max(1, int(round(tile * (1.0 - overlap))))
    padded_h, padded_w = max(height, tile), max(width, tile)
    if (padded_h, padded_w) != (height, width):
        x = F.pad(x, (0, padded_w - width, 0, padded_h - height))
    origins = [(top, left) for top in _window_starts(padded_h, tile, stride)
               for left in _window_starts(padded_w, tile, stride)]
    count = torch.zeros(1, 1, padded_h, padded_w, dtype=torch.float32, device=x.device)
    for top, left in origins:  # the weight map: how many windows cover each pixel
        count[..., top:top + tile, left:left + tile] += 1
    windows = [(i, top, left) for i in range(n) for top, left in origins]
    total: Tensor | None = None
    for start in range(0, len(windows), window_batch_size):
        chunk = windows[start:start + window_batch_size]
        crops = torch.cat([x[i:i + 1, :, top:top + tile, left:left + tile] for i, top, left in chunk])
        probs = torch.softmax(_logits(forward, crops, amp), dim=1)
        if total is None:
            total = torch.zeros(n, probs.shape[1], padded_h, padded_w, dtype=torch.float32, device=x.device)
        for (i, top, left), p in zip(chunk, probs):
            total[i, :, top:top + tile, left:left + tile] += p
    assert total is not None
    return total[:, :, :height, :width] / count[:, :, :height, :width]


def _validate_tta(scales: Sequence[float], tile: int | None, tile_overlap: float) -> tuple[float, ...]:
    scales = tuple(float(s) for s in scales)
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive integer (pixels) or None, got {tile!r}")
    if not 0.0 <= tile_overlap < 1.0:
        raise ValueError(f"tile_overlap must be in [0, 1), got {tile_overlap!r}")
    return scales


@torch.inference_mode()
def predict_logits(model: nn.Module | ForwardFn, batch: Tensor, *, scales: Sequence[float] = (1.0,),
                   flip: bool = False, tile: int | None = None, tile_overlap: float = 1 / 3,
                   align_corners: bool = False, window_batch_size: int = 4, amp: bool = False) -> Tensor:
    """Class **probabilities** (softmax) of a normalised N×3×H×W ``batch``, averaged over every scaled and
    flipped pass (paper §4), at the input's H×W.

    For each scale ``s`` the batch is resized bilinearly to ``round(s·H) × round(s·W)`` (scale 1.0 is not
    resized at all), run (by sliding window when ``tile`` is set and the scaled image exceeds it), and the
    probabilities are resized back to H×W; with ``flip`` the left-right mirrored input is run too and its
    probabilities mirrored back. The result is the plain mean of the ``len(scales) × (1 + flip)`` passes,
    so ``scales=(1.0,)`` without flip is exactly ``softmax(model(batch))``.

    ``model`` is a module (put in eval mode for the call, then restored) or any callable from an N×3×H×W
    float tensor to logits (an ONNX runtime wrapper, say). ``amp`` runs the passes under float16 autocast
    on CUDA and is ignored on other devices; probabilities are always float32.
    """
    if not isinstance(batch, Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"expected a normalised N×3×H×W float tensor, got {shape}")
    if batch.shape[0] == 0 or batch.shape[2] == 0 or batch.shape[3] == 0:
        raise ValueError(f"empty batch of shape {tuple(batch.shape)}")
    if not batch.is_floating_point():
        raise ValueError(f"expected a float tensor (normalise images with Normalization.to_tensor), got {batch.dtype}")
    scales = _validate_tta(scales, tile, tile_overlap)
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        return _tta(model, batch, scales, flip, tile, tile_overlap, align_corners, window_batch_size, amp)
    finally:
        if was_training:
            model.train()


predict_probabilities = predict_logits  # the clearer name: the result is softmax probabilities


def _tta(forward: ForwardFn, batch: Tensor, scales: tuple[float, ...], flip: bool, tile: int | None,
         tile_overlap: float, align_corners: bool, window_batch_size: int, amp: bool) -> Tensor:
    height, width = batch.shape[-2:]

    def run(x: Tensor) -> Tensor:
        if tile is None:
            return torch.softmax(_logits(forward, x, amp), dim=1)
        return sliding_window_probabilities(forward, x, tile, overlap=tile_overlap,
                                            window_batch_size=window_batch_size, amp=amp)

    total: Tensor | None = None
    passes = 0
    for scale in scales:
        size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        scaled = batch if size == (height, width) else F.interpolate(
            batch, size=size, mode="bilinear", align_corners=align_corners)
        for mirrored in (False, True) if flip else (False,):
            probs = run(scaled.flip(-1) if mirrored else scaled)
            if mirrored:
                probs = probs.flip(-1)
            if probs.shape[-2:] != (height, width):
                probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=align_corners)
            total = probs if total is None else total + probs
            passes += 1
    assert total is not None
    return total if passes == 1 else total / passes


# --- Predictor ---------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """One image's result: ``labels`` (H×W int64 class indices), ``probabilities`` (C×H×W float32, or None
    when the Predictor was asked not to keep them), ``class_names`` (C names)."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def areas(self, fraction: bool = False) -> dict[str, int | float]:
        """Pixels per class (every class, zeros included), or their fraction of the image; counts sum to H×W."""
        counts = np.bincount(self.labels.reshape(-1), minlength=self.num_classes)
        if fraction:
            return {name: float(c) / self.labels.size for name, c in zip(self.class_names, counts.tolist())}
        return {name: int(c) for name, c in zip(self.class_names, counts.tolist())}


class Predictor:
    """Segment numpy images with a DeepLab model (or any logits callable), with the paper's test-time options.

    Args:
        model: a DeepLab (or any module returning logits); may be None when ``backend`` is given. It is
            moved to ``device`` and put in eval mode in place.
        normalization: how the uint8 pixels are normalised (``IMAGENET``, ``SIGNED_UNIT``, or the file's).
        device: where to run.
        output_stride: switch the model's output stride in place (``model.set_output_stride``) — the paper's
            train-at-16 / evaluate-at-8 protocol. The model is **left at this stride** afterwards (the
            Predictor owns it for inference; call ``set_output_stride`` again to go back).
        scales, flip: multi-scale and left-right flip test-time augmentation (``PAPER_SCALES``, True for the
            paper's protocol); probabilities are averaged.
        tile, tile_overlap, window_batch_size: sliding-window inference for images larger than ``tile``.
        batch_size: images per forward pass. Images of different sizes are bucketed by size and each bucket
            runs in batches of this size, so every image is predicted exactly as if alone (up to float
            rounding); nothing is padded.
        class_names: names for ``Prediction.areas``; default ``"0"``, ``"1"``, ...
        backend: a callable N×3×H×W float tensor → logits (tensor or numpy) used instead of the model's
            forward, e.g. an ONNX runtime session wrapper; test-time augmentation is applied around it.
        amp: float16 autocast on CUDA (ignored on CPU).
        channels_last: run the model and inputs in channels-last memory format (default: 1.25-1.4x faster on
            CPU, benchmarks/inference_speed.py).
        return_probabilities: keep the C×H×W probabilities in each ``Prediction`` (memory: 4·C bytes/pixel).
    """

    def __init__(
        self,
        model: nn.Module | None,
        *,
        normalization: Normalization,
        device: str | torch.device = "cpu",
        output_stride: int | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        tile: int | None = None,
        tile_overlap: float = 1 / 3,
        window_batch_size: int = 4,
        batch_size: int = 4,
        class_names: Sequence[str] | None = None,
        backend: ForwardFn | None = None,
        amp: bool = False,
        channels_last: bool = True,
        return_probabilities: bool = True,
        align_corners: bool | None = None,
    ) -> None:
        if not isinstance(normalization, Normalization):
            raise TypeError("normalization must be a deeplab.inference.Normalization, got "
                            f"{type(normalization).__name__}")
        if model is None and backend is None:
            raise ValueError("give a model, a backend callable, or both")
        if backend is not None and not callable(backend):
            raise TypeError(f"backend must be callable (N×3×H×W tensor → logits), got {type(backend).__name__}")
        for name, value in (("batch_size", batch_size), ("window_batch_size", window_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.scales = _validate_tta(scales, tile, tile_overlap)
        self.device = torch.device(device)
        self.normalization = normalization
        self.flip, self.tile, self.tile_overlap = bool(flip), tile, float(tile_overlap)
        self.window_batch_size, self.batch_size = window_batch_size, batch_size
        self.class_names = tuple(str(n) for n in class_names) if class_names is not None else None
        self.amp, self.channels_last = bool(amp), bool(channels_last)
        self.return_probabilities = bool(return_probabilities)
        self.model = model
        self.backend = backend
        if model is not None:
            if output_stride is not None:
                if not hasattr(model, "set_output_stride"):
                    raise ValueError(f"output_stride={output_stride} needs a model with set_output_stride "
                                     f"(a deeplab DeepLab), got {type(model).__name__}")
                model.set_output_stride(output_stride)
            model.to(self.device)
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
            model.eval()
        elif output_stride is not None:
            raise ValueError("output_stride needs the torch model; a backend callable has its stride baked in")
        if align_corners is None:
            align_corners = bool(getattr(model, "align_corners", False))
        self.align_corners = align_corners

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> "Predictor":
        """A Predictor for a ``deeplab.checkpoint.save_model`` file: the model is rebuilt from the file, the
        normalisation and class names come from its metadata unless given in ``kwargs``."""
        from .checkpoint import load_model

        model, metadata = load_model(path)
        if kwargs.get("normalization") is None:
            try:
                kwargs["normalization"] = Normalization.from_metadata(metadata)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
        if kwargs.get("class_names") is None and metadata.get("classes"):
            kwargs["class_names"] = metadata["classes"]
        return cls(model, **kwargs)

    def _forward(self, x: Tensor) -> Any:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.backend is not None:
            return self.backend(x)
        assert self.model is not None
        return self.model(x)

    def predict_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> Tensor:
        """Probabilities (N×C×H×W on ``device``) for equal-size images, with this Predictor's settings."""
        x = self.normalization.to_tensor(images, self.device)
        return predict_logits(self._forward, x, scales=self.scales, flip=self.flip, tile=self.tile,
                              tile_overlap=self.tile_overlap, align_corners=self.align_corners,
                              window_batch_size=self.window_batch_size, amp=self.amp)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One ``Prediction`` per H×W×3 uint8 image, in order. Sizes may differ: equal sizes are batched."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("predict takes a sequence of images; wrap a single image in a list: predict([image])")
        images = [_check_image(image, f"images[{i}]") for i, image in enumerate(images)]
        results: list[Prediction | None] = [None] * len(images)
        for indices in self._batches(images):
            probs = self.predict_batch([images[i] for i in indices])
            names = self._names(probs.shape[1])
            labels = probs.argmax(dim=1).cpu().numpy().astype(np.int64)
            kept = probs.cpu().numpy().astype(np.float32, copy=False) if self.return_probabilities else None
            for j, i in enumerate(indices):
                results[i] = Prediction(labels=labels[j], probabilities=None if kept is None else kept[j],
                                        class_names=names)
        return results  # type: ignore[return-value]

    def _batches(self, images: Sequence[np.ndarray]) -> Iterator[list[int]]:
        buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            buckets[image.shape].append(i)
        for indices in buckets.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start:start + self.batch_size]

    def _names(self, num_classes: int) -> tuple[str, ...]:
        if self.class_names is None:
            return tuple(str(i) for i in range(num_classes))
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names given but the model predicts {num_classes} classes")
        return self.class_names
