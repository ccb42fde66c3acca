"""Class probabilities with the paper's test-time augmentation and sliding windows.

``predict_probabilities`` averages the softmax probabilities of every scaled (``PAPER_SCALES``) and left-right
flipped pass at the input resolution, each pass optionally by sliding window (``sliding_window_probabilities``,
``tile``) for images too large to run whole.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAPER_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
"""The paper's multi-scale inference scales (used with left-right flipping)."""

ForwardFn = Callable[[Tensor], Any]  # normalised N×3×H×W float → N×C×h×w logits (tensor or array)


def class_labels(scores: Tensor, dim: int = 1) -> Tensor:
    """The index of the largest score along the class dimension ``dim`` (the first on ties, like argmax).

    ``max(dim).indices`` rather than ``argmax(dim)``: over the channels of an N×C×H×W tensor torch's argmax
    took 14 ms on a 360×480 CamVid frame against 3 ms for max — on the fast paths, more than the network."""
    return scores.max(dim=dim).indices


def logits_of(forward: ForwardFn, x: Tensor, amp: bool) -> Tensor:
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


def window_starts(size: int, tile: int, stride: int) -> list[int]:
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
        return torch.softmax(logits_of(forward, x, amp), dim=1)
    stride = max(1, int(round(tile * (1.0 - overlap))))
    padded_h, padded_w = max(height, tile), max(width, tile)
    if (padded_h, padded_w) != (height, width):
        x = F.pad(x, (0, padded_w - width, 0, padded_h - height))
    origins = [(top, left) for top in window_starts(padded_h, tile, stride)
               for left in window_starts(padded_w, tile, stride)]
    count = torch.zeros(1, 1, padded_h, padded_w, dtype=torch.float32, device=x.device)
    for top, left in origins:  # the weight map: how many windows cover each pixel
        count[..., top:top + tile, left:left + tile] += 1
    windows = [(i, top, left) for i in range(n) for top, left in origins]
    total: Tensor | None = None
    for start in range(0, len(windows), window_batch_size):
        chunk = windows[start:start + window_batch_size]
        crops = torch.cat([x[i:i + 1, :, top:top + tile, left:left + tile] for i, top, left in chunk])
        probs = torch.softmax(logits_of(forward, crops, amp), dim=1)
        if total is None:
            total = torch.zeros(n, probs.shape[1], padded_h, padded_w, dtype=torch.float32, device=x.device)
        for (i, top, left), p in zip(chunk, probs):
            total[i, :, top:top + tile, left:left + tile] += p
    assert total is not None
    return total[:, :, :height, :width] / count[:, :, :height, :width]


def validate_tta(scales: Sequence[float], tile: int | None, tile_overlap: float) -> tuple[float, ...]:
    scales = tuple(float(s) for s in scales)
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive integer (pixels) or None, got {tile!r}")
    if not 0.0 <= tile_overlap < 1.0:
        raise ValueError(f"tile_overlap must be in [0, 1), got {tile_overlap!r}")
    return scales


@torch.inference_mode()
def predict_probabilities(model: nn.Module | ForwardFn, batch: Tensor, *, scales: Sequence[float] = (1.0,),
                   flip: bool = False, tile: int | None = None, tile_overlap: float = 1 / 3,
                   align_corners: bool = False, window_batch_size: int = 4, amp: bool = False) -> Tensor:
    """Class **probabilities** (softmax) of a normalised N×3×H×W ``batch``, averaged over every scaled and
    flipped pass (the paper's test-time protocol), at the input's H×W.

    For each scale ``s`` the batch is resized bilinearly to ``round(s·H) × round(s·W)`` (scale 1.0 is not
    resized at all), run (by sliding window when ``tile`` is set and the scaled image exceeds it), and the
    probabilities are resized back to H×W; with ``flip`` the left-right mirrored input is run too and its
    probabilities mirrored back. The result is the plain mean of the ``len(scales) × (1 + flip)`` passes,
    so ``scales=(1.0,)`` without flip is exactly ``softmax(model(batch))``.

    No work is repeated: with ``flip`` (on a scaled image run whole) an image and its mirror run as one batch, and the two
    are summed at the scaled size so each scale is resized back once — resizing is linear and commutes with
    the mirror, so this equals resizing every pass to float rounding.

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
    scales = validate_tta(scales, tile, tile_overlap)
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        return _tta(model, batch, scales, flip, tile, tile_overlap, align_corners, window_batch_size, amp)
    finally:
        if was_training:
            model.train()


def _tta(forward: ForwardFn, batch: Tensor, scales: tuple[float, ...], flip: bool, tile: int | None,
         tile_overlap: float, align_corners: bool, window_batch_size: int, amp: bool) -> Tensor:
    height, width = batch.shape[-2:]

    def run(x: Tensor) -> Tensor:
        if tile is None:
            return torch.softmax(logits_of(forward, x, amp), dim=1)
        return sliding_window_probabilities(forward, x, tile, overlap=tile_overlap,
                                            window_batch_size=window_batch_size, amp=amp)

    n = batch.shape[0]
    total: Tensor | None = None
    for scale in scales:
        size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        scaled = batch if size == (height, width) else F.interpolate(
            batch, size=size, mode="bilinear", align_corners=align_corners)
        whole = tile is None or max(size) <= tile  # run whole, not by windows
        if flip and whole:  # the image and its mirror as one batch: one forward pass per scale
            pair = run(torch.cat([scaled, scaled.flip(-1)]))
            probs = pair[:n] + pair[n:].flip(-1)
        else:
            probs = run(scaled)
            if flip:
                probs = probs + run(scaled.flip(-1)).flip(-1)
        if probs.shape[-2:] != (height, width):  # summed first: one resize per scale (resizing is linear and
            probs = F.interpolate(probs, size=(height, width), mode="bilinear",  # commutes with the flip)
                                  align_corners=align_corners)
        total = probs if total is None else total + probs
    assert total is not None
    passes = len(scales) * (2 if flip else 1)
    return total if passes == 1 else total / passes
