"""ResNet-18/34/50/101/152 backbones with atrous output stride, multi-grid and cascaded extra blocks.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, ``downsample.0/1``) so a
torchvision ``resnet50-*.pth`` file or a torchvision DeepLabV3 checkpoint loads key for key. The extra
cascaded blocks of the paper (§3.2, "going deeper") are ``layer5``..``layer7``.

How the paper's knobs map onto the code:

- ``output_stride``: stages past it keep stride 1 and multiply their dilation (``plan_stages``).
- ``multi_grid=(r1, r2, r3)``: unit *i* of block4 (and of every extra block) uses ``rate × r_i``.
- ``extra_blocks``: block5..block7 are copies of block4 (3 units) with a nominal stride of 2, planned like the
  other stages: past the output stride each keeps stride 1 and doubles the rate (the paper's atrous cascade,
  base rates 4, 8, 16 at output stride 16); below it they stride, which is how the paper's Table 1 reaches
  output strides 64 to 256. A striding copy has the same channels in and out, so its shortcut subsamples
  (TF's ``subsample``) instead of adding a projection: no parameters depend on the output stride.
- ``first_unit_previous_dilation``: torchvision's convention, where the unit that gave up its stride keeps
  the dilation in force before the stage (the paper's / TF's ResNet dilates the whole stage).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .base import (VALID_OUTPUT_STRIDES, Backbone, FeatureInfo, check_output_stride, init_weights, plan_stages,
                   set_conv_geometry)

STEM_STRIDE = 4  # conv1 (stride 2) + maxpool (stride 2)
STAGE_STRIDES = (1, 2, 2, 2)
STAGE_PLANES = (64, 128, 256, 512)
EXTRA_BLOCK_UNITS = 3
EXTRA_BLOCK_STRIDE = 2
DEFAULT_MULTI_GRID = (1, 2, 4)  # the paper's best grid
LOW_LEVEL_STAGE = 1  # layer1 ends at stride 4: the decoder's skip input
AUX_STAGE = 3  # layer3: the auxiliary head's input


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34). Unlike torchvision's, it accepts dilation > 1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _make_downsample(inplanes, planes, stride)
        self.stride = stride

    def set_geometry(self, stride: int, dilation: int) -> None:
        set_conv_geometry(self.conv1, stride, dilation)
        set_conv_geometry(self.conv2, 1, dilation)
        if self.downsample is not None:
            set_conv_geometry(self.downsample[0], stride, 1)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = _shortcut(x, self.downsample, self.stride)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride, dilation) → 1×1 ×4 (ResNet-50/101/152, torchvision's 'v1.5' stride placement)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width, out = planes, planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _make_downsample(inplanes, out, stride)
        self.stride = stride

    def set_geometry(self, stride: int, dilation: int) -> None:
        set_conv_geometry(self.conv2, stride, dilation)
        if self.downsample is not None:
            set_conv_geometry(self.downsample[0], stride, 1)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = _shortcut(x, self.downsample, self.stride)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(x: Tensor, downsample: nn.Module | None, stride: int) -> Tensor:
    """The residual branch's input: projected, as is, or — a striding unit with equal channels — subsampled."""
    if downsample is not None:
        return downsample(x)
    return x[..., ::stride, ::stride] if stride > 1 else x


def _make_downsample(inplanes: int, out: int, stride: int) -> nn.Sequential | None:
    # Decided by the nominal stride, like torchvision, so the key set never depends on output_stride.
    if stride == 1 and inplanes == out:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))


ResNetBlock = type[BasicBlock] | type[Bottleneck]
DEPTHS: dict[int, tuple[ResNetBlock, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNetBackbone(Backbone):
    """A torchvision-layout ResNet without ``avgpool``/``fc``, returning low-level, aux and final features."""

    def __init__(
        self,
        *,
        depth: int = 50,
        output_stride: int = 16,
        multi_grid: Sequence[int] = DEFAULT_MULTI_GRID,
        extra_blocks: int = 0,
        first_unit_previous_dilation: bool = False,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {tuple(DEPTHS)}, got {depth!r}")
        if extra_blocks not in (0, 1, 2, 3):
            raise ValueError(f"extra_blocks must be one of (0, 1, 2, 3), got {extra_blocks!r}")
        block, layers = DEPTHS[depth]
        self.depth = depth
        self.multi_grid = _check_multi_grid(multi_grid, depth)
        self.first_unit_previous_dilation = first_unit_previous_dilation

        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for index, (planes, units, stride) in enumerate(zip(STAGE_PLANES, layers, STAGE_STRIDES), start=1):
            self.add_module(f"layer{index}", _make_stage(block, inplanes, planes, units, stride))
            inplanes = planes * block.expansion
        for index in range(5, 5 + extra_blocks):  # the paper's block5..block7: copies of block4
            stage = _make_stage(block, inplanes, STAGE_PLANES[-1], EXTRA_BLOCK_UNITS, 1)  # stride set by the plan
            self.add_module(f"layer{index}", stage)
        self.valid_output_strides = VALID_OUTPUT_STRIDES + tuple(
            VALID_OUTPUT_STRIDES[-1] * EXTRA_BLOCK_STRIDE ** k for k in range(1, extra_blocks + 1))
        self.stage_names = [f"layer{i}" for i in range(1, 5 + extra_blocks)]
        self.out_channels = inplanes
        self.aux_channels = STAGE_PLANES[2] * block.expansion
        self.low_level_channels = STAGE_PLANES[0] * block.expansion
        init_weights(self)
        self.set_output_stride(output_stride)

    @property
    def unit_dilations(self) -> dict[str, list[int]]:
        """The 3×3 dilation each unit of each stage applies now (what the tests check)."""
        return {name: [_unit_conv(unit).dilation[0] for unit in getattr(self, name)] for name in self.stage_names}

    def set_output_stride(self, output_stride: int) -> None:
        """Re-plan strides and dilations in place; the parameters (and key set) are unchanged."""
        self.output_stride = check_output_stride(output_stride, self.valid_output_strides)
        extra = len(self.stage_names) - len(STAGE_STRIDES)
        plans = plan_stages(STAGE_STRIDES + (EXTRA_BLOCK_STRIDE,) * extra, output_stride, STEM_STRIDE)
        last_regular = len(STAGE_STRIDES) - 1
        for index, (name, plan) in enumerate(zip(self.stage_names, plans)):
            grid = self.multi_grid if index >= last_regular else None  # block4 and its copies
            # torchvision's convention exists for the four regular stages only; copies dilate whole.
            keep_entry = self.first_unit_previous_dilation and index <= last_regular
            for position, unit in enumerate(getattr(self, name)):
                base = plan.entry_dilation if position == 0 and keep_entry else plan.dilation
                unit.set_geometry(plan.stride if position == 0 else 1, base * (grid[position] if grid else 1))
        reductions = [STEM_STRIDE]
        for plan in plans:
            reductions.append(reductions[-1] * plan.stride)
        self.feature_info = [  # reductions[i]: the stride after layer i (reductions[0]: the stem)
            FeatureInfo("low_level", self.low_level_channels, reductions[LOW_LEVEL_STAGE]),
            FeatureInfo("aux", self.aux_channels, reductions[AUX_STAGE]),
            FeatureInfo("out", self.out_channels, reductions[-1]),
        ]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name == f"layer{LOW_LEVEL_STAGE}":
                features["low_level"] = x
            elif name == f"layer{AUX_STAGE}":
                features["aux"] = x
        features["out"] = x
        return features


def _make_stage(block: ResNetBlock, inplanes: int, planes: int, units: int, stride: int) -> nn.Sequential:
    layers = [block(inplanes, planes, stride)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, units)]
    return nn.Sequential(*layers)


def _unit_conv(unit: nn.Module) -> nn.Conv2d:
    """The conv that carries a unit's dilation (conv2 in both block types)."""
    return unit.conv2


def _check_multi_grid(multi_grid: Sequence[int], depth: int) -> tuple[int, ...]:
    """A grid gives the rates of the three units of block4 (and of each extra block) in order.
    ResNet-18/34's block4 has two units, so there it uses the first two rates."""
    grid = tuple(multi_grid)
    if len(grid) != EXTRA_BLOCK_UNITS or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in grid):
        raise ValueError(
            f"multi_grid must be {EXTRA_BLOCK_UNITS} positive integer rates (one per unit of block4 of "
            f"resnet{depth}), e.g. (1, 2, 4); got {multi_grid!r}"
        )
    return grid
