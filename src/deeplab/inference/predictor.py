"""``Predictor``: numpy images in, ``Prediction`` (labels, probabilities, areas) out.

Images of different sizes are batched by bucketing equal sizes together — never by padding, which would
change what the image-pooling branch averages and so the predictions.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.normalization import Normalization, check_image
from .streaming import stream_labels
from .tta import ForwardFn, class_labels, predict_probabilities, validate_tta

DEFAULT_TILE = 513  # the paper's crop: windows the size the models were trained at
DEFAULT_TILE_ABOVE = 2048 * 2048  # pixels: above this, prediction tiles on its own (4 MP; ~1 GB for MobileNetV2)

if TYPE_CHECKING:
    from .loading import LoadedModel


@dataclass
class Prediction:
    """One image's result: ``labels`` (H×W class indices: int64, or uint8/int16 for an image predicted by
    streaming windows), ``probabilities`` (C×H×W float32, or None when the Predictor was asked not to keep
    them), ``class_names`` (C names)."""

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
        output_stride: run the model at this output stride (``model.at_output_stride`` around every call) —
            the paper's train-at-16 / evaluate-at-8 protocol; the model is back at its own stride between
            calls, and its config is never changed.
        scales, flip: multi-scale and left-right flip test-time augmentation (``PAPER_SCALES``, True for the
            paper's protocol); probabilities are averaged.
        tile, tile_overlap, window_batch_size: sliding-window inference for images larger than ``tile``; at a
            single scale it streams (``streaming.py``: memory bounded by the tile and the image width).
        tile_above: images with more pixels than this are tiled (``DEFAULT_TILE`` windows) even without
            ``tile`` — said once through ``notify``; None never tiles on its own.
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
        tile_above: int | None = DEFAULT_TILE_ABOVE,
        notify: Callable[[str], Any] | None = None,
    ) -> None:
        if not isinstance(normalization, Normalization):
            raise TypeError("normalization must be a deeplab.data.normalization.Normalization, got "
                            f"{type(normalization).__name__}")
        if model is None and backend is None:
            raise ValueError("give a model, a backend callable, or both")
        if backend is not None and not callable(backend):
            raise TypeError(f"backend must be callable (N×3×H×W tensor → logits), got {type(backend).__name__}")
        for name, value in (("batch_size", batch_size), ("window_batch_size", window_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.scales = validate_tta(scales, tile, tile_overlap)
        self.device = torch.device(device)
        self.normalization = normalization
        self.flip, self.tile, self.tile_overlap = bool(flip), tile, float(tile_overlap)
        self.window_batch_size, self.batch_size = window_batch_size, batch_size
        self.class_names = tuple(str(n) for n in class_names) if class_names is not None else None
        self.amp, self.channels_last = bool(amp), bool(channels_last)
        self.return_probabilities = bool(return_probabilities)
        if tile_above is not None and (isinstance(tile_above, bool) or not isinstance(tile_above, int)
                                       or tile_above < 1):
            raise ValueError(f"tile_above must be a positive number of pixels or None, got {tile_above!r}")
        self.tile_above, self.notify, self._told = tile_above, notify, False
        self._classes: int | None = None
        self.model = model
        self.backend = backend
        self.output_stride = output_stride
        if model is not None:
            if output_stride is not None:
                if not hasattr(model, "at_output_stride"):
                    raise ValueError(f"output_stride={output_stride} needs a model with at_output_stride "
                                     f"(a deeplab DeepLab), got {type(model).__name__}")
                with model.at_output_stride(output_stride):  # an invalid stride fails here, not at first use
                    pass
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
        """A Predictor for any model file ``deeplab.inference.load_any`` reads (deeplab model files and
        checkpoints, torchvision DeepLabV3 files, the authors' ``.tflite``, exported ``.onnx``)."""
        from .loading import load_any

        return cls.from_loaded(load_any(path), **kwargs)

    @classmethod
    def from_loaded(cls, loaded: "LoadedModel", **kwargs: Any) -> "Predictor":
        """A Predictor for a loaded model file: its model or backend, with the normalisation and class names
        of its card unless given in ``kwargs``."""
        if kwargs.get("normalization") is None:
            kwargs["normalization"] = loaded.card.normalization
        if kwargs.get("class_names") is None and loaded.card.classes:
            kwargs["class_names"] = loaded.card.classes
        if loaded.backend is not None:
            kwargs.setdefault("backend", loaded.backend)
        return cls(loaded.model, **kwargs)

    def _stride(self) -> contextlib.AbstractContextManager:
        if self.model is None or self.output_stride is None:
            return contextlib.nullcontext()
        return self.model.at_output_stride(self.output_stride)

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
        with self._stride():
            return predict_probabilities(self._forward, x, scales=self.scales, flip=self.flip, tile=self.tile,
                                         tile_overlap=self.tile_overlap, align_corners=self.align_corners,
                                         window_batch_size=self.window_batch_size, amp=self.amp)

    def streams(self, image: np.ndarray) -> bool:
        """Whether ``image`` is predicted by streaming windows (a tile at a single scale, or above
        ``tile_above``); multi-scale above ``tile_above`` is refused: it needs each rescaled image whole."""
        pixels = image.shape[0] * image.shape[1]
        auto = self.tile_above is not None and pixels > self.tile_above
        if self.scales != (1.0,):
            if auto:
                raise ValueError(f"{image.shape[1]}x{image.shape[0]} is above the {self.tile_above:,}-pixel tiling "
                                 "budget and multi-scale needs every rescaled image whole in memory; predict it "
                                 "at a single scale (flip works), or raise the budget (--tile-above)")
            return False
        return self.tile is not None or auto

    def predict_streamed(self, image: np.ndarray, probabilities_out: np.ndarray | None = None) -> np.ndarray:
        """Labels of one image by streaming windows (``streaming.stream_labels``); ``probabilities_out``
        (C×H×W, e.g. ``streaming.open_probability_file``) receives the probabilities band by band."""
        image = check_image(image, "image")
        tile = self.tile or DEFAULT_TILE
        if self.tile is None and not self._told:
            self._told = True
            if self.notify is not None:
                self.notify(f"images above {self.tile_above / 1e6:.1f} MP are predicted in {tile}x{tile} windows "
                            "(memory bounded by the tile and the image width)")
        # On a CPU, windows one at a time: a batch of four 513² windows held ~215 MB more activations at peak
        # (4 MP: 836 → 621 MB) and was no faster; a GPU keeps the configured window batch.
        windows = self.window_batch_size if self.device.type == "cuda" else 1
        with self._stride(), torch.inference_mode():
            return stream_labels(self._forward, image, self.normalization, tile, overlap=self.tile_overlap,
                                 flip=self.flip, window_batch_size=windows, amp=self.amp,
                                 device=self.device, probabilities_out=probabilities_out)

    @property
    def num_classes(self) -> int:
        """The model's output channels (from the class names, else one tiny forward pass)."""
        if self._classes is None:
            if self.class_names is not None:
                self._classes = len(self.class_names)
            else:
                self._classes = self.predict_batch([np.zeros((33, 33, 3), np.uint8)]).shape[1]
        return self._classes

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One ``Prediction`` per H×W×3 uint8 image, in order. Sizes may differ: equal sizes are batched."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("predict takes a sequence of images; wrap a single image in a list: predict([image])")
        images = [check_image(image, f"images[{i}]") for i, image in enumerate(images)]
        results: list[Prediction | None] = [None] * len(images)
        streamed = [i for i, image in enumerate(images) if self.streams(image)]
        for i in streamed:
            names = self.class_names_for(self.num_classes)
            probs = np.empty((len(names), *images[i].shape[:2]), np.float32) if self.return_probabilities else None
            results[i] = Prediction(self.predict_streamed(images[i], probs), probs, names)
        for indices in self._batches([None if i in streamed else image for i, image in enumerate(images)]):
            probs = self.predict_batch([images[i] for i in indices])
            names = self.class_names_for(probs.shape[1])
            labels = class_labels(probs).cpu().numpy().astype(np.int64)
            kept = probs.cpu().numpy().astype(np.float32, copy=False) if self.return_probabilities else None
            for j, i in enumerate(indices):
                results[i] = Prediction(labels=labels[j], probabilities=None if kept is None else kept[j],
                                        class_names=names)
        return results  # type: ignore[return-value]

    def _batches(self, images: Sequence[np.ndarray | None]) -> Iterator[list[int]]:
        buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            if image is not None:  # None: predicted another way
                buckets[image.shape].append(i)
        for indices in buckets.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start:start + self.batch_size]

    def class_names_for(self, num_classes: int) -> tuple[str, ...]:
        """The class names of a ``num_classes``-output model: the given ones (checked) or "0", "1", ..."""
        if self.class_names is None:
            return tuple(str(i) for i in range(num_classes))
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names given but the model predicts {num_classes} classes")
        return self.class_names
