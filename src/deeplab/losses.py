"""The training loss: per-pixel cross-entropy at full label resolution, ignore pixels excluded.

Differences from ``F.cross_entropy(..., ignore_index=255)``: a crop whose pixels are all ignore gives 0 (not
NaN) and contributes no gradient; class weights are normalised by the weights of the counted pixels, as
PyTorch's weighted mean does; the auxiliary head's loss is added with ``aux_weight``.
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

    def pixel_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy over non-ignored pixels (0 when there are none)."""
        per_pixel = F.cross_entropy(logits.float(), target, weight=self.class_weights,
                                    ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        if self.class_weights is None:
            denominator = valid.sum()
        else:
            denominator = self.class_weights[target.clamp(0, len(self.class_weights) - 1)][valid].sum()
        return per_pixel.sum() / denominator.clamp(min=1)

    def forward(self, output: Tensor | tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        if isinstance(output, tuple):
            logits, aux = output
            return self.pixel_loss(logits, target) + self.aux_weight * self.pixel_loss(aux, target)
        return self.pixel_loss(output, target)
