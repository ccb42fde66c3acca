"""Backbones by name: a plain dict of builders (``BACKBONES``), no registry machinery."""

from __future__ import annotations

from typing import Callable, Sequence

from .base import Backbone, FeatureInfo, check_output_stride, plan_stages
from .mobilenet import MobileNetV2Backbone
from .mobilenet_v3 import MobileNetV3LargeBackbone
from .resnet import ResNetBackbone
from .vgg import VGG16Backbone
from .xception import Xception65Backbone

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}


def _resnet(depth: int) -> Callable[..., Backbone]:
    def build(*, output_stride: int, multi_grid: Sequence[int] | None, extra_blocks: int,
              first_unit_previous_dilation: bool, width_mult: float, channel_divisor: int) -> Backbone:
        _only_default("width_mult", width_mult, 1.0, f"resnet{depth}")
        _only_default("channel_divisor", channel_divisor, 8, f"resnet{depth}")
        return ResNetBackbone(depth=depth, output_stride=output_stride, extra_blocks=extra_blocks,
                              first_unit_previous_dilation=first_unit_previous_dilation,
                              **({} if multi_grid is None else {"multi_grid": multi_grid}))
    return build


def _mobilenet_v2(*, output_stride: int, multi_grid: Sequence[int] | None, extra_blocks: int,
                  first_unit_previous_dilation: bool, width_mult: float, channel_divisor: int) -> Backbone:
    if multi_grid is not None:
        raise ValueError(f"multi_grid={tuple(multi_grid)!r} is not supported by backbone 'mobilenet_v2': its "
                         "last stage has one unit, so there is no grid of unit rates (leave multi_grid unset)")
    _only_default("extra_blocks", extra_blocks, 0, "mobilenet_v2")
    _only_default("first_unit_previous_dilation", first_unit_previous_dilation, False, "mobilenet_v2")
    return MobileNetV2Backbone(output_stride=output_stride, width_mult=width_mult, channel_divisor=channel_divisor)


def _xception65(*, output_stride: int, multi_grid: Sequence[int] | None, extra_blocks: int,
                first_unit_previous_dilation: bool, width_mult: float, channel_divisor: int) -> Backbone:
    _only_default("extra_blocks", extra_blocks, 0, "xception65")
    _only_default("width_mult", width_mult, 1.0, "xception65")
    _only_default("channel_divisor", channel_divisor, 8, "xception65")
    _only_default("first_unit_previous_dilation", first_unit_previous_dilation, False, "xception65")
    return Xception65Backbone(output_stride=output_stride,
                              **({} if multi_grid is None else {"multi_grid": multi_grid}))


def _fixed(cls: type[Backbone], name: str) -> Callable[..., Backbone]:
    """A backbone whose only knob is the output stride (VGG-16, MobileNetV3-Large)."""
    def build(*, output_stride: int, multi_grid: Sequence[int] | None, extra_blocks: int,
              first_unit_previous_dilation: bool, width_mult: float, channel_divisor: int) -> Backbone:
        if multi_grid is not None:
            raise ValueError(f"multi_grid={tuple(multi_grid)!r} is not supported by backbone {name!r} (leave it unset)")
        for knob, value, default in (("extra_blocks", extra_blocks, 0), ("width_mult", width_mult, 1.0),
                                     ("channel_divisor", channel_divisor, 8),
                                     ("first_unit_previous_dilation", first_unit_previous_dilation, False)):
            _only_default(knob, value, default, name)
        return cls(output_stride=output_stride)
    return build


def _only_default(name: str, value: object, default: object, backbone: str) -> None:
    if value != default:
        raise ValueError(f"{name}={value!r} is not supported by backbone {backbone!r} (only {default!r})")


BACKBONES: dict[str, Callable[..., Backbone]] = {
    **{name: _resnet(depth) for name, depth in RESNET_DEPTHS.items()},
    "mobilenet_v2": _mobilenet_v2,
    "mobilenet_v3_large": _fixed(MobileNetV3LargeBackbone, "mobilenet_v3_large"),
    "xception65": _xception65,
    "vgg16": _fixed(VGG16Backbone, "vgg16"),
}
GRID_UNITS = {**{name: 3 for name in RESNET_DEPTHS}, "xception65": 3}  # backbones with a Multi-Grid


def build_backbone(name: str, **kwargs) -> Backbone:
    """Build a backbone by name; an unknown name raises ``ValueError`` listing the valid ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)


__all__ = ["BACKBONES", "GRID_UNITS", "Backbone", "FeatureInfo", "build_backbone", "check_output_stride",
           "plan_stages", "MobileNetV2Backbone", "MobileNetV3LargeBackbone", "ResNetBackbone", "VGG16Backbone",
           "Xception65Backbone"]
