"""The training loss: per-pixel cross-entropy at full label resolution, ignore pixels excluded.

Differences from ``F.cross_entropy(..., ignore_index=255)``: a crop whose pixels are all ignore gives 0 (not
NaN) and contributes no gradient; class weights are normalised by the weights of the counted pixels, as
PyTorch's weighted mean does; the auxiliary head's loss is added with ``aux_weight``.

The normaliser can be given from outside (``denominator=``): the training step sums ``normaliser`` over all
micro-batches of all ranks, so a step is the mean over every labelled pixel of the global batch, whichever way
it is split into micro-batches and processes (per-batch means, as torchvision and mmsegmentation use, weight a
crop that is mostly ignore as much as a fully labelled one).

Hard-pixel mining (``keep_fraction`` < 1, ``train.top_k_pixels``, DeepLab's ``top_k_percent_pixels``): only the
hardest ``ceil(keep_fraction × labelled pixels)`` of a micro-batch's (weighted) pixel losses count, and the
normaliser shrinks by the same fraction — without class weights a step is then the mean over the kept pixels.
Easy pixels of the large classes (road, sky) stop drowning the thin ones' gradients; ``mining_fraction`` ramps the
fraction down from 1 over the first steps, so the model first learns the easy pixels it will later skip.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_top_k(fraction: float, ramp_iterations: int) -> None:
    """``train.top_k_pixels`` and ``train.top_k_ramp_iterations`` that cannot work, as one-line errors."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train.top_k_pixels must be a fraction in (0, 1] (1 = every labelled pixel), got {fraction}")
    if ramp_iterations < 0:
        raise ValueError(f"train.top_k_ramp_iterations must be >= 0, got {ramp_iterations}")


def mining_fraction(fraction: float, ramp_iterations: int, iteration: int) -> float:
    """The share of pixels kept at step ``iteration`` (0-based): 1 at the start, falling linearly to
    ``fraction`` over ``ramp_iterations`` steps (at once when 0), as DeepLab's ``hard_example_mining_step``."""
    ramp = 1.0 if ramp_iterations == 0 else min(1.0, iteration / ramp_iterations)
    return ramp * fraction + (1.0 - ramp)


class SegmentationLoss(nn.Module):
    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | Tensor | None = None,
                 aux_weight: float = 0.4, keep_fraction: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.keep_fraction = keep_fraction  # the training loop sets it each step (``mining_fraction``)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def normaliser(self, target: Tensor) -> Tensor:
        """The weighted mean's denominator: the number of non-ignored pixels, each counted with its class weight."""
        valid = target != self.ignore_index
        if self.class_weights is None:
            full = valid.sum().float()
        else:
            full = self.class_weights[target.clamp(0, len(self.class_weights) - 1)][valid].sum()
        return full * self.keep_fraction if self.keep_fraction < 1 else full

    def pixel_loss(self, logits: Tensor, target: Tensor, denominator: Tensor | None = None) -> Tensor:
        """Cross-entropy summed over non-ignored pixels (the hardest ``keep_fraction`` of them) / ``denominator``
        (default: this target's normaliser); 0 with zero gradient when the denominator is 0."""
        per_pixel = F.cross_entropy(logits.float(), target, weight=self.class_weights,
                                    ignore_index=self.ignore_index, reduction="none")
        if denominator is None:
            denominator = self.normaliser(target)
        if self.keep_fraction < 1:
            kept = math.ceil(self.keep_fraction * int((target != self.ignore_index).sum()))
            per_pixel = per_pixel.flatten().topk(kept, sorted=False).values  # ignore pixels' losses are 0
        total = per_pixel.sum()
        return torch.where(denominator > 0, total / denominator.clamp(min=torch.finfo(total.dtype).tiny), total * 0)

    def forward(self, output: Tensor | tuple[Tensor, Tensor], target: Tensor,
                denominator: Tensor | None = None) -> Tensor:
        if isinstance(output, tuple):
            logits, aux = output
            return (self.pixel_loss(logits, target, denominator)
                    + self.aux_weight * self.pixel_loss(aux, target, denominator))
        return self.pixel_loss(output, target, denominator)
