"""Aligned Xception-65, the DeepLabV3+ backbone (arXiv:1802.02611; the authors' TF ``xception_65``).

Changes from the original Xception, as in the paper:

- every max-pool is a stride-2 depthwise-separable conv (the third sep conv of a strided block),
- the middle flow has 16 blocks instead of 8,
- BN + ReLU follow every 3x3 depthwise conv.

Features: ``"low_level"`` = entry block1 (128 ch, stride 4, what the common PyTorch ports feed the
decoder), ``"aux"`` = middle flow (728 ch), ``"out"`` = exit flow (2048 ch).

    >>> backbone = Xception65Backbone(output_stride=16)
    >>> backbone.set_output_stride(8)  # same weights, denser output
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn

from ..depthwise import Conv2d
from .base import (
    Backbone,
    FeatureInfo,
    check_output_stride,
    init_weights,
    plan_stages,
    set_conv_geometry,
)

STEM_STRIDE = 2
ENTRY_CHANNELS = ((128, 128, 128), (256, 256, 256), (728, 728, 728))
MIDDLE_CHANNELS = (728, 728, 728)
MIDDLE_BLOCKS = 16
EXIT_CHANNELS = ((728, 1024, 1024), (1536, 1536, 2048))
# Nominal strides of [entry block1, block2, block3, middle flow, exit block1, exit block2].
STAGE_STRIDES = (2, 2, 2, 1, 2, 1)
DEFAULT_MULTI_GRID = (1, 1, 1)  # the authors' default: no grid


class SeparableConv2d(nn.Module):
    """3x3 depthwise conv -> BN -> ReLU -> 1x1 pointwise conv -> BN (no biases: BN follows each conv).

    The ReLU after the depthwise BN is the DeepLabV3+ change to Xception.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = Conv2d(in_channels, in_channels, 3, stride, padding=dilation,
                                dilation=dilation, groups=in_channels, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.depthwise_relu = nn.ReLU(inplace=True)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.depthwise_relu(self.depthwise_bn(self.depthwise(x)))
        return self.pointwise_bn(self.pointwise(x))


class XceptionBlock(nn.Module):
    """Three separable convs; the third carries the block's stride (it replaces Xception's max-pool).

    ``skip``: ``"conv"`` (1x1 conv + BN with the block's stride), ``"identity"`` (plain sum) or
    ``"none"``. Without a skip the ReLUs follow each sep conv (TF's activation_fn_in_separable_conv);
    otherwise they precede each one, as in Xception.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], stride: int = 1, dilation: int = 1,
                 skip: str = "conv") -> None:
        super().__init__()
        if skip not in ("conv", "identity", "none"):
            raise ValueError(f"skip must be one of ('conv', 'identity', 'none'), got {skip!r}")
        if skip == "identity" and (stride != 1 or in_channels != channels[-1]):
            raise ValueError("an identity skip needs stride 1 and equal in/out channels")
        self.skip_type = skip
        self.sep1 = SeparableConv2d(in_channels, channels[0], 1, dilation)
        self.sep2 = SeparableConv2d(channels[0], channels[1], 1, dilation)
        self.sep3 = SeparableConv2d(channels[1], channels[2], stride, dilation)
        if skip == "conv":
            self.skip = nn.Conv2d(in_channels, channels[2], 1, stride, bias=False)
            self.skip_bn = nn.BatchNorm2d(channels[2])
        # Not in place: the block input is still needed by the skip branch.
        self.relu_in = nn.ReLU(inplace=False)
        self.relu = nn.ReLU(inplace=True)

    def set_geometry(self, stride: int, dilation: int, unit_rates: Sequence[int] = (1, 1, 1)) -> None:
        """Re-plan in place: depthwise conv k at ``dilation × unit_rates[k]`` (the authors' ``unit_rate_list``,
        which Multi-Grid sets for the last block), the stride on sep3 and the skip."""
        set_conv_geometry(self.sep1.depthwise, 1, dilation * unit_rates[0])
        set_conv_geometry(self.sep2.depthwise, 1, dilation * unit_rates[1])
        set_conv_geometry(self.sep3.depthwise, stride, dilation * unit_rates[2])
        if self.skip_type == "conv":
            set_conv_geometry(self.skip, stride, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.skip_type == "none":
            y = self.relu(self.sep1(x))
            y = self.relu(self.sep2(y))
            return self.relu(self.sep3(y))
        y = self.sep1(self.relu_in(x))
        y = self.sep2(self.relu(y))
        y = self.sep3(self.relu(y))
        shortcut = self.skip_bn(self.skip(x)) if self.skip_type == "conv" else x
        return y + shortcut


class Xception65Backbone(Backbone):
    """Aligned Xception-65 with a configurable output stride (8, 16 or 32).

    ``multi_grid`` gives the rates of the three separable convs of the last exit-flow block, multiplied by the
    rate in force there — as the authors' ``xception_65`` applies its ``multi_grid`` argument.
    """

    def __init__(self, *, output_stride: int = 16, multi_grid: Sequence[int] = DEFAULT_MULTI_GRID) -> None:
        super().__init__()
        check_output_stride(output_stride)
        grid = tuple(multi_grid)
        if len(grid) != 3 or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in grid):
            raise ValueError(f"multi_grid must be 3 positive integer rates (one per separable conv of the last "
                             f"exit-flow block of xception65), e.g. (1, 2, 4); got {multi_grid!r}")
        self.multi_grid = grid
        entry: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(3, 32, 3, STEM_STRIDE, padding=1, bias=False),
            bn1=nn.BatchNorm2d(32),
            relu1=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(32, 64, 3, padding=1, bias=False),
            bn2=nn.BatchNorm2d(64),
            relu2=nn.ReLU(inplace=True),
        )
        in_channels = 64
        for i, channels in enumerate(ENTRY_CHANNELS, start=1):
            entry[f"block{i}"] = XceptionBlock(in_channels, channels, stride=2, skip="conv")
            in_channels = channels[-1]
        self.entry_flow = nn.Sequential(entry)
        self.middle_flow = nn.Sequential(
            *(XceptionBlock(in_channels, MIDDLE_CHANNELS, skip="identity") for _ in range(MIDDLE_BLOCKS)))
        self.exit_flow = nn.Sequential(OrderedDict(
            block1=XceptionBlock(in_channels, EXIT_CHANNELS[0], stride=2, skip="conv"),
            block2=XceptionBlock(EXIT_CHANNELS[0][-1], EXIT_CHANNELS[1], skip="none"),
        ))
        init_weights(self)
        self.set_output_stride(output_stride)

    def _stages(self) -> list[list[XceptionBlock]]:
        """The blocks of each planned stage, in the order of ``STAGE_STRIDES``."""
        return [[self.entry_flow.block1], [self.entry_flow.block2], [self.entry_flow.block3],
                list(self.middle_flow), [self.exit_flow.block1], [self.exit_flow.block2]]

    def set_output_stride(self, output_stride: int) -> None:
        """Re-plan strides and dilations in place for a new output stride (same parameters)."""
        check_output_stride(output_stride)
        plans = plan_stages(STAGE_STRIDES, output_stride, stem_stride=STEM_STRIDE)
        stages = self._stages()
        for index, (plan, blocks) in enumerate(zip(plans, stages)):
            # TF's stack_blocks_dense: the block giving up its stride still runs at the rate in force
            # before it (entry_dilation); the rate is multiplied only afterwards. For every other
            # block entry_dilation equals dilation, so one rule covers all.
            grid = self.multi_grid if index == len(stages) - 1 else (1, 1, 1)
            for block in blocks:
                block.set_geometry(plan.stride, plan.entry_dilation, grid)
        self.output_stride = output_stride
        low_level = STEM_STRIDE * plans[0].stride
        aux = low_level * plans[1].stride * plans[2].stride * plans[3].stride
        self.feature_info = [
            FeatureInfo("low_level", ENTRY_CHANNELS[0][-1], low_level),
            FeatureInfo("aux", MIDDLE_CHANNELS[-1], aux),
            FeatureInfo("out", EXIT_CHANNELS[1][-1], output_stride),
        ]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        for name, module in self.entry_flow.named_children():
            x = module(x)
            if name == "block1":
                features["low_level"] = x
        x = self.middle_flow(x)
        features["aux"] = x
        features["out"] = self.exit_flow(x)
        return features
