"""The DeepLab model: backbone → head → logits bilinearly upsampled to the input's exact size.

The loss is taken against full-resolution labels (paper §4.1: keeping the ground truth intact beats
downsampling it), so ``forward`` always returns logits at the input's H×W, for any size, odd ones
included. It returns a tensor (not torchvision's dict, which breaks tracing and ONNX), and
``(logits, aux_logits)`` only while training with the auxiliary head.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .aspp import rescale_rates
from .backbones.base import Backbone, check_output_stride
from .aspp_v2 import SummedASPPHead
from .heads import DeepLabHead, DeepLabV3PlusHead, FCNHead


class DeepLab(nn.Module):
    """A segmentation model with torchvision's top-level names: ``backbone``, ``classifier``,
    ``aux_classifier``. ``config`` holds the builder arguments that rebuild it (used by checkpoints)."""

    def __init__(
        self,
        backbone: Backbone,
        classifier: DeepLabHead | DeepLabV3PlusHead | SummedASPPHead,
        aux_classifier: FCNHead | None = None,
        *,
        align_corners: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.align_corners = align_corners
        self.config: dict[str, Any] = dict(config or {})

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    @property
    def aspp_rates(self) -> tuple[int, ...] | None:
        """The ASPP's current atrous rates (None for a head without ASPP)."""
        aspp = self.classifier.aspp
        return None if aspp is None else aspp.rates

    def set_output_stride(self, output_stride: int, *, aspp_rates: Sequence[int] | None = None) -> None:
        """Switch the output stride in place with the same weights — the paper trains at OS16 and
        evaluates at OS8 (+1.39 mIoU). The ASPP rates follow (×2 when the stride halves) unless given.

        ``config`` is not touched: it records how the model was built (and trained), which is what a model
        file must rebuild; the stride it runs at now is ``output_stride``. Prefer ``at_output_stride``, which
        switches back afterwards."""
        check_output_stride(output_stride, self.backbone.valid_output_strides)
        aspp = self.classifier.aspp
        if aspp is not None:
            rates = aspp_rates if aspp_rates is not None else rescale_rates(aspp.rates, self.output_stride,
                                                                             output_stride)
            aspp.set_rates(rates)
        self.backbone.set_output_stride(output_stride)

    @contextlib.contextmanager
    def at_output_stride(self, output_stride: int | None) -> Iterator["DeepLab"]:
        """``with model.at_output_stride(8): ...`` runs the block at that stride and restores the previous one
        (and its ASPP rates) afterwards, even on error; ``None`` leaves the stride as it is."""
        if output_stride is None or output_stride == self.output_stride:
            yield self
            return
        previous, rates = self.output_stride, self.aspp_rates
        self.set_output_stride(output_stride)
        try:
            yield self
        finally:
            self.set_output_stride(previous, aspp_rates=rates)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        logits = self._upsample(self.classifier(features), size)
        if self.training and self.aux_classifier is not None:
            return logits, self._upsample(self.aux_classifier(features["aux"]), size)
        return logits

    def _upsample(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
