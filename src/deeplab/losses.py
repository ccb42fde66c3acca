"""The training loss: per-pixel cross-entropy at full label resolution, ignore pixels excluded.

Differences from ``F.cross_entropy(..., ignore_index=255)``: a crop whose pixels are all ignore gives 0 (not
NaN) and contributes no gradient; class weights are normalised by the weights of the counted pixels, as
PyTorch's weighted mean does; the auxiliary head's loss is added with ``aux_weight``.

The normaliser can be given from outside (``denominator=``): the training step sums ``normaliser`` over all
micro-batches of all ranks, so a step is the mean over every labelled pixel of the global batch, whichever way
it is split into micro-batches and processes (per-batch means, as torchvision and mmsegmentation use, weight a
crop that is mostly ignore as much as a fully labelled one).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SegmentationLoss(nn.Module):
    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | Tensor | None = None,
                 aux_weight: float = 0.4) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def normaliser(self, target: Tensor) -> Tensor:
        """The weighted mean's denominator: the number of non-ignored pixels, each counted with its class weight."""
        valid = target != self.ignore_index
        if self.class_weights is None:
            return valid.sum().float()
        return self.class_weights[target.clamp(0, len(self.class_weights) - 1)][valid].sum()

    def pixel_loss(self, logits: Tensor, target: Tensor, denominator: Tensor | None = None) -> Tensor:
        """Cross-entropy summed over non-ignored pixels / ``denominator`` (default: this target's normaliser);
        0 with zero gradient when the denominator is 0."""
        per_pixel = F.cross_entropy(logits.float(), target, weight=self.class_weights,
                                    ignore_index=self.ignore_index, reduction="none")
        if denominator is None:
            denominator = self.normaliser(target)
        total = per_pixel.sum()
        return torch.where(denominator > 0, total / denominator.clamp(min=torch.finfo(total.dtype).tiny), total * 0)

    def forward(self, output: Tensor | tuple[Tensor, Tensor], target: Tensor,
                denominator: Tensor | None = None) -> Tensor:
        if isinstance(output, tuple):
            logits, aux = output
            return (self.pixel_loss(logits, target, denominator)
                    + self.aux_weight * self.pixel_loss(aux, target, denominator))
        return self.pixel_loss(output, target, denominator)
