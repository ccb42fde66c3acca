"""MobileNetV3-Large backbone (arXiv:1905.02244) as torchvision's ``deeplabv3_mobilenet_v3_large`` uses it.

The layers are torchvision's ``mobilenet_v3_large(dilated=True).features``: a 3×3 hard-swish stem, fifteen
inverted residuals (some with squeeze-and-excitation, ReLU early and hard-swish late), and the 1×1 conv to 960
channels. They are registered as children ``0`` .. ``16`` of the backbone itself, so parameter names are the
ones of torchvision's segmentation files (``backbone.0.0.weight``, ``backbone.13.block.2.fc1.weight``, ...),
which load as they are. Batch norm uses torchvision's ``eps=0.001, momentum=0.01``.

Output stride: a stage past it keeps stride 1 and *every* unit of it, the one that gave up its stride
included, runs at the multiplied dilation — torchvision's rule for this network (its ``dilated=True`` is our
output stride 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from ..depthwise import Conv2d
from .base import Backbone, FeatureInfo, StagePlan, check_output_stride, plan_stages, set_conv_geometry
from .mobilenet import _make_divisible

BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)  # torchvision's MobileNetV3 norm layer
STEM_CHANNELS, STEM_STRIDE = 16, 2
LAST_CHANNELS_FACTOR = 6  # the final 1×1 conv: 160 → 960
LOW_LEVEL_INDEX = 3  # features[3]: the end of the stride-4 stage (24 channels), the decoder's skip input
AUX_INDEX = 4  # features[4]: torchvision's aux input, the unit that strides into 1/8 (40 channels)


@dataclass(frozen=True)
class Unit:
    """One inverted residual: kernel, expanded and output channels, squeeze-excitation, hard-swish, stride."""

    kernel: int
    expanded: int
    out: int
    se: bool
    hardswish: bool
    stride: int


# torchvision's mobilenet_v3_large table (input channels follow from the previous unit).
LARGE: tuple[Unit, ...] = (
    Unit(3, 16, 16, False, False, 1),
    Unit(3, 64, 24, False, False, 2), Unit(3, 72, 24, False, False, 1),
    Unit(5, 72, 40, True, False, 2), Unit(5, 120, 40, True, False, 1), Unit(5, 120, 40, True, False, 1),
    Unit(3, 240, 80, False, True, 2), Unit(3, 200, 80, False, True, 1), Unit(3, 184, 80, False, True, 1),
    Unit(3, 184, 80, False, True, 1), Unit(3, 480, 112, True, True, 1), Unit(3, 672, 112, True, True, 1),
    Unit(5, 672, 160, True, True, 2), Unit(5, 960, 160, True, True, 1), Unit(5, 960, 160, True, True, 1),
)


class ConvBNActivation(nn.Sequential):
    """Conv (no bias) → BN → activation, named ``0``/``1``/``2`` like torchvision's ``Conv2dNormActivation``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = nn.Hardswish) -> None:
        layers: list[nn.Module] = [Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                                          groups=groups, bias=False), BatchNorm(out_channels)]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Global pool → 1×1 (``fc1``) → ReLU → 1×1 (``fc2``) → hard-sigmoid, scaling the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = _make_divisible(channels // 4, 8)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * F.hardsigmoid(scale)


class InvertedResidualV3(nn.Module):
    """[1×1 expand] → k×k depthwise → [squeeze-excitation] → 1×1 project, residual when shapes allow (decided by
    the nominal stride, as torchvision does). The layers live in ``block`` (torchvision's name)."""

    def __init__(self, in_channels: int, unit: Unit) -> None:
        super().__init__()
        activation = nn.Hardswish if unit.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if unit.expanded != in_channels:
            layers.append(ConvBNActivation(in_channels, unit.expanded, 1, activation=activation))
        layers.append(ConvBNActivation(unit.expanded, unit.expanded, unit.kernel, unit.stride, groups=unit.expanded,
                                       activation=activation))
        if unit.se:
            layers.append(SqueezeExcitation(unit.expanded))
        layers.append(ConvBNActivation(unit.expanded, unit.out, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = unit.stride == 1 and in_channels == unit.out
        self.depthwise_index = 1 if unit.expanded != in_channels else 0

    @property
    def depthwise(self) -> nn.Conv2d:
        """The k×k depthwise conv: the only conv that carries stride or dilation."""
        return self.block[self.depthwise_index][0]

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3LargeBackbone(Backbone):
    """``features.0`` .. ``features.16`` of MobileNetV3-Large, returning low-level, aux and out maps."""

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNActivation(3, STEM_CHANNELS, 3, STEM_STRIDE)]
        channels = STEM_CHANNELS
        for unit in LARGE:
            layers.append(InvertedResidualV3(channels, unit))
            channels = unit.out
        layers.append(ConvBNActivation(channels, LAST_CHANNELS_FACTOR * channels, 1))
        for index, layer in enumerate(layers):
            self.add_module(str(index), layer)  # torchvision's names: its features Sequential's indices
        self.units = layers[1:-1]
        self.stage_starts = [i for i, unit in enumerate(LARGE) if unit.stride == 2]  # C1..C4 open here
        self.channels_of = {"low_level": LARGE[LOW_LEVEL_INDEX - 1].out, "aux": LARGE[AUX_INDEX - 1].out,
                            "out": LAST_CHANNELS_FACTOR * channels}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.set_output_stride(output_stride)

    def _stages(self) -> list[list[InvertedResidualV3]]:
        bounds = [0, *self.stage_starts, len(self.units)]
        return [self.units[a:b] for a, b in zip(bounds, bounds[1:])]

    def set_output_stride(self, output_stride: int) -> None:
        """Re-plan the depthwise convs' strides and dilations in place; parameters are unchanged."""
        check_output_stride(output_stride)
        stages = self._stages()
        plans: list[StagePlan] = plan_stages([LARGE[0].stride] + [2] * (len(stages) - 1), output_stride, STEM_STRIDE)
        running, reductions = STEM_STRIDE, []
        for plan, units in zip(plans, stages):
            for position, unit in enumerate(units):
                set_conv_geometry(unit.depthwise, plan.stride if position == 0 else 1, plan.dilation)
            running *= plan.stride
            reductions.append(running)
        self.output_stride = output_stride
        at = {index: reduction for stage, reduction in zip(stages, reductions) for index in
              (self.units.index(u) + 1 for u in stage)}
        self.feature_info = [FeatureInfo("low_level", self.channels_of["low_level"], at[LOW_LEVEL_INDEX]),
                             FeatureInfo("aux", self.channels_of["aux"], at[AUX_INDEX]),
                             FeatureInfo("out", self.channels_of["out"], reductions[-1])]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        for index, layer in enumerate(self.children()):
            x = layer(x)
            if index == LOW_LEVEL_INDEX:
                features["low_level"] = x
            elif index == AUX_INDEX:
                features["aux"] = x
        features["out"] = x
        return features
