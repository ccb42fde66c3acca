"""Atrous Spatial Pyramid Pooling, DeepLabV3 version (paper §3.3).

Parallel branches on the backbone's last feature map — a 1×1 conv, one 3×3 atrous conv per rate, and the
image-level branch (global average pool → 1×1 conv → broadcast back) — each with BN + ReLU, concatenated
and projected by a 1×1 conv + BN + ReLU + dropout. Module names follow torchvision's ``ASPP``
(``convs.N``, ``project``) so torchvision DeepLabV3 checkpoints load.

Rates are derived from the output stride: the paper's (6, 12, 18) at OS16 cover the same input-pixel
field of view as (12, 24, 36) at OS8, so ``rate × output_stride`` is what stays constant.
An empty rate tuple is the mobile configuration of the authors' model zoo (1×1 + image pooling only).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .atrous import AtrousConv2d

PAPER_RATES_AT_OS16 = (6, 12, 18)
REFERENCE_OUTPUT_STRIDE = 16


def aspp_rates_for(output_stride: int, rates_at_os16: Sequence[int] = PAPER_RATES_AT_OS16) -> tuple[int, ...]:
    """Rates that keep the field of view of ``rates_at_os16`` at another output stride.

    >>> aspp_rates_for(8), aspp_rates_for(16), aspp_rates_for(32)
    ((12, 24, 36), (6, 12, 18), (3, 6, 9))
    """
    return rescale_rates(rates_at_os16, REFERENCE_OUTPUT_STRIDE, output_stride)


def rescale_rates(rates: Sequence[int], from_stride: int, to_stride: int) -> tuple[int, ...]:
    """``rate × stride`` is invariant; refuse rates that would stop being whole numbers."""
    scaled = []
    for rate in rates:
        if (rate * from_stride) % to_stride:
            raise ValueError(
                f"ASPP rates {tuple(rates)} at output stride {from_stride} have no integer equivalent at "
                f"output stride {to_stride}; pass aspp_rates explicitly"
            )
        scaled.append(rate * from_stride // to_stride)
    return tuple(scaled)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> list[nn.Module]:
    """Conv (no bias: BN follows) + BN + ReLU as a list, so callers control the Sequential's indices."""
    padding = (kernel_size - 1) // 2 * dilation
    conv = AtrousConv2d if dilation > 1 else nn.Conv2d
    return [
        conv(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def separable_conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> list[nn.Module]:
    """3×3 depthwise (BN + ReLU) then 1×1 pointwise (BN + ReLU): the DeepLabV3+ separable conv."""
    depthwise = AtrousConv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation,
                          groups=in_channels, bias=False)
    return [depthwise, nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), *conv_bn_relu(in_channels, out_channels)]


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pool → 1×1 conv + BN + ReLU → back to the map's size.

    Note BN here sees one value per channel and image, so training needs batches of at least 2.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        if self[2].training and x.shape[0] == 1:
            # PyTorch's own message ("Expected more than 1 value per channel") does not say what to do.
            raise ValueError("ASPP image pooling: batch norm cannot train on a batch of 1 image (one value per "
                             "channel); train with batches of >= 2, freeze batch norm, or call model.eval()")
        # Bilinear upsampling of a 1×1 map is a broadcast; expand says so and exports cleanly.
        return super().forward(x).expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """The ASPP module; ``rates`` gives the 3×3 branches (none for the mobile configuration)."""

    def __init__(
        self,
        in_channels: int,
        *,
        rates: Sequence[int] = PAPER_RATES_AT_OS16,
        out_channels: int = 256,
        image_pooling: bool = True,
        separable: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        rates = tuple(rates)
        if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
            raise ValueError(f"ASPP rates must be positive integers, got {rates!r}")
        branch = separable_conv_bn_relu if separable else lambda i, o, d: conv_bn_relu(i, o, 3, d)
        branches: list[nn.Module] = [nn.Sequential(*conv_bn_relu(in_channels, out_channels))]
        branches += [nn.Sequential(*branch(in_channels, out_channels, rate)) for rate in rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)  # torchvision's name
        self.project = nn.Sequential(
            *conv_bn_relu(len(branches) * out_channels, out_channels), nn.Dropout(dropout)
        )
        self.out_channels = out_channels

    @property
    def rates(self) -> tuple[int, ...]:
        """The dilation each 3×3 branch applies now."""
        return tuple(branch[0].dilation[0] for branch in self._atrous_branches())

    def set_rates(self, rates: Sequence[int]) -> None:
        """Change the atrous rates in place (same weights), e.g. when the output stride changes."""
        branches = self._atrous_branches()
        if len(tuple(rates)) != len(branches):
            raise ValueError(f"this ASPP has {len(branches)} atrous branches, got rates {tuple(rates)!r}")
        for branch, rate in zip(branches, rates):
            branch[0].dilation = (rate, rate)
            branch[0].padding = (rate, rate)

    def _atrous_branches(self) -> list[nn.Sequential]:
        return [b for b in self.convs[1:] if not isinstance(b, ASPPPooling)]

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))
