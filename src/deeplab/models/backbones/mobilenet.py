"""MobileNetV2 backbone (arXiv:1801.04381) for DeepLabV3 at output stride 8, 16 or 32.

The layers are torchvision's ``mobilenet_v2(width_mult=...).features[:18]``: the final 1x1 conv to
1280 channels (``features.18``) is left out, as in the authors' TF DeepLab, which reads the
320-channel layer. Module and parameter names are torchvision's, so its checkpoints load by path.

Output stride is reached the TF ``mobilenet.py`` way: a unit whose stride is given up runs its 3x3
depthwise conv at stride 1 with the dilation in force *before* it, and the units after it use the
multiplied dilation. Only the depthwise convs are ever dilated.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..depthwise import Conv2d
from .base import (
    Backbone,
    FeatureInfo,
    StagePlan,
    check_output_stride,
    init_weights,
    plan_stages,
    set_conv_geometry,
)

# (expand ratio t, output channels c, units n, stride s) per stage, as in the paper and torchvision.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
STEM_STRIDE = 2
CHANNEL_DIVISOR = 8  # torchvision's ``round_nearest`` and TF's ``divisible_by``
LOW_LEVEL_STAGE = 1  # the (6, 24, 2, 2) stage ends at stride 4: the decoder's skip input
AUX_STAGE = 4  # the (6, 96, 3, 1) stage ends at nominal stride 16


def _make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10 %.

    Same rounding as torchvision and TF, so width multipliers give the published channel counts.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6, named ``0``/``1``/``2`` like torchvision's
    ``Conv2dNormActivation`` so state-dict keys match (``features.0.0.weight``, ``features.0.1.*``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups,
                   bias=False),  # depthwise ones (groups > 1) run in fp32 under CPU bf16 autocast
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1, with a residual when shapes allow.

    The layers live in ``self.conv`` (torchvision's name) so keys read ``features.N.conv.K...``.
    ``stride`` is the *nominal* stride; the residual is decided from it (as torchvision and TF do),
    so a unit that gave up its stride for dilation still has no residual.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 dilation: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.use_res_connect = stride == 1 and in_channels == out_channels  # torchvision's name
        hidden = int(round(in_channels * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    @property
    def depthwise(self) -> nn.Conv2d:
        """The 3x3 depthwise conv: the only conv that carries stride or dilation."""
        return self.conv[-3][0]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Backbone(Backbone):
    """MobileNetV2 features (``features.0`` .. ``features.17``) returning low-level, aux and out maps.

    ``width_mult`` scales every layer, the stem included. ``channel_divisor`` is the multiple channel counts
    are rounded to: 8 in torchvision and ImageNet MobileNetV2 files; TF DeepLab uses 1 whenever the width is
    not 1.0 (its ``divisible_by``), so the model zoo's ``dm05`` is ``width_mult=0.5, channel_divisor=1``
    (a 12-channel stride-4 stage where divisor 8 gives 16).
    """

    def __init__(self, *, output_stride: int = 16, width_mult: float = 1.0,
                 channel_divisor: int = CHANNEL_DIVISOR) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        check_output_stride(output_stride)
        self.width_mult = width_mult
        self.stage_strides = [s for _, _, _, s in INVERTED_RESIDUAL_SETTING]

        if isinstance(channel_divisor, bool) or not isinstance(channel_divisor, int) or channel_divisor < 1:
            raise ValueError(f"channel_divisor must be a positive integer, got {channel_divisor!r}")
        in_channels = _make_divisible(STEM_CHANNELS * width_mult, channel_divisor)
        layers: list[nn.Module] = [ConvBNReLU6(3, in_channels, stride=STEM_STRIDE)]
        self.stage_channels = [in_channels]
        # features index of each stage's units, so a re-plan can find the depthwise convs
        self.stage_units: list[list[int]] = []
        for expand_ratio, channels, units, stride in INVERTED_RESIDUAL_SETTING:
            out_channels = _make_divisible(channels * width_mult, channel_divisor)
            self.stage_units.append(list(range(len(layers), len(layers) + units)))
            for i in range(units):
                layers.append(InvertedResidual(in_channels, out_channels, stride if i == 0 else 1,
                                               expand_ratio))
                in_channels = out_channels
            self.stage_channels.append(out_channels)
        self.features = nn.Sequential(*layers)  # torchvision's name, kept so checkpoints load
        init_weights(self)
        self.set_output_stride(output_stride)

    def _plan(self, output_stride: int) -> list[StagePlan]:
        return plan_stages(self.stage_strides, output_stride, stem_stride=STEM_STRIDE)

    def set_output_stride(self, output_stride: int) -> None:
        """Re-plan strides and dilations of the depthwise convs in place; parameters are unchanged."""
        check_output_stride(output_stride)
        plans = self._plan(output_stride)
        reductions = []
        running = STEM_STRIDE
        for plan, units in zip(plans, self.stage_units):
            for i, index in enumerate(units):
                block: InvertedResidual = self.features[index]
                if i == 0:  # the unit that strides, or that gave its stride up and keeps the old rate
                    set_conv_geometry(block.depthwise, plan.stride, plan.entry_dilation)
                else:
                    set_conv_geometry(block.depthwise, 1, plan.dilation)
            running *= plan.stride
            reductions.append(running)
        self.output_stride = output_stride
        last = len(self.stage_units) - 1
        self.feature_info = [
            FeatureInfo("low_level", self.stage_channels[LOW_LEVEL_STAGE + 1], reductions[LOW_LEVEL_STAGE]),
            FeatureInfo("aux", self.stage_channels[AUX_STAGE + 1], reductions[AUX_STAGE]),
            FeatureInfo("out", self.stage_channels[last + 1], reductions[last]),
        ]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        low_end = self.stage_units[LOW_LEVEL_STAGE][-1]
        aux_end = self.stage_units[AUX_STAGE][-1]
        low_level = self.features[: low_end + 1](x)
        aux = self.features[low_end + 1: aux_end + 1](low_level)
        out = self.features[aux_end + 1:](aux)
        return {"low_level": low_level, "aux": aux, "out": out}
