"""Segmentation heads: DeepLabV3's ASPP classifier, the DeepLabV3+ decoder and the auxiliary FCN head.

Each head maps the backbone's feature dict to logits at feature resolution; the model upsamples them.
``DeepLabHead`` and ``FCNHead`` are ``nn.Sequential`` with torchvision's indices so that the keys
``classifier.0.convs.*``, ``classifier.4.*``, ``aux_classifier.4.*`` of torchvision files line up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aspp import ASPP, conv_bn_relu, separable_conv_bn_relu


class DeepLabHead(nn.Sequential):
    """ASPP → [3×3 conv + BN + ReLU, torchvision's extra layer, optional] → 1×1 conv to classes.

    With ``aspp=None`` it is the paper's cascaded model head: a 1×1 classifier right on the features.
    """

    def __init__(self, in_channels: int, num_classes: int, aspp: ASPP | None, *, head_conv: bool = False) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        if aspp is not None:
            layers.append(aspp)
            channels = aspp.out_channels
        if head_conv:
            layers += conv_bn_relu(channels, channels, 3)
        layers.append(nn.Conv2d(channels, num_classes, 1))
        super().__init__(*layers)

    @property
    def aspp(self) -> ASPP | None:
        return self[0] if isinstance(self[0], ASPP) else None

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return super().forward(features["out"])


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ decoder (arXiv:1802.02611 §3.1).

    ASPP output is upsampled to the stride-4 low-level map (×4 at OS16), concatenated with the low-level
    features reduced to ``low_level_reduced`` channels (48: fewer keeps the decoder from being dominated by
    low-level detail, paper Table 1), refined by two 3×3 convs and classified.
    """

    def __init__(
        self,
        low_level_channels: int,
        num_classes: int,
        aspp: ASPP,
        *,
        low_level_reduced: int = 48,
        decoder_channels: int = 256,
        separable: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.aspp = aspp
        self.reduce = nn.Sequential(*conv_bn_relu(low_level_channels, low_level_reduced))
        fused = aspp.out_channels + low_level_reduced
        if separable:
            refine = separable_conv_bn_relu(fused, decoder_channels) + separable_conv_bn_relu(
                decoder_channels, decoder_channels)
        else:
            refine = conv_bn_relu(fused, decoder_channels, 3) + conv_bn_relu(decoder_channels, decoder_channels, 3)
        self.refine = nn.Sequential(*refine)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        self.align_corners = align_corners

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        low_level = self.reduce(features["low_level"])
        context = F.interpolate(self.aspp(features["out"]), size=low_level.shape[-2:], mode="bilinear",
                                align_corners=self.align_corners)
        return self.classifier(self.refine(torch.cat([context, low_level], dim=1)))


class FCNHead(nn.Sequential):
    """Auxiliary head on the stride-16 stage (torchvision's ``FCNHead``): 3×3 conv to in/4, BN, ReLU,
    dropout 0.1, 1×1 conv to classes. Only used for an extra training loss."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = in_channels // 4
        super().__init__(*conv_bn_relu(in_channels, inter, 3), nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))
