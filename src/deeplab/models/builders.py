"""The DeepLabV3 and DeepLabV3+ builders: ``deeplabv3(...)``, ``deeplabv3plus(...)`` (the named-model registry
is ``registry.py``, the v1/v2 builders ``lineage.py``).

Builders take explicit, typed, keyword-only arguments (detectron2's idea: construction is separate from
config parsing). Every model remembers its builder arguments in ``model.config`` so that
``build_model(config)`` rebuilds it — checkpoints store that dict.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from .aspp import ASPP, PAPER_RATES_AT_OS16, aspp_rates_for
from .backbones import build_backbone
from .deeplab import DeepLab
from .heads import DeepLabHead, DeepLabV3PlusHead, FCNHead


def deeplabv3(
    *,
    backbone: str = "resnet101",
    num_classes: int = 21,
    output_stride: int = 16,
    multi_grid: Sequence[int] | None = None,
    extra_blocks: int = 0,
    aspp: bool = True,
    aspp_rates: Sequence[int] | None = None,
    aspp_channels: int = 256,
    image_pooling: bool = True,
    separable_aspp: bool = False,
    aspp_dropout: float = 0.1,
    head_conv: bool = False,
    aux_loss: bool = False,
    width_mult: float = 1.0,
    channel_divisor: int = 8,
    first_unit_previous_dilation: bool = False,
    align_corners: bool = False,
) -> DeepLab:
    """DeepLabV3 (arXiv:1706.05587): atrous backbone → ASPP → 1×1 classifier → bilinear upsampling.

    Args:
        backbone: one of ``BACKBONES`` (resnet18/34/50/101/152, mobilenet_v2, xception65).
        num_classes: output channels of the classifier.
        output_stride: 8, 16 or 32 — input size / final feature size.
        multi_grid: per-unit rate multipliers of the last block: ResNet's block4 and extra blocks (default
            the paper's (1, 2, 4)), Xception-65's last exit-flow block (default (1, 1, 1), as the authors'
            code); ``None`` is the backbone's default. MobileNetV2 has no grid and refuses one.
        extra_blocks: 0..3 cascaded copies of block4 (block5..block7; ResNet only).
        aspp: False gives the paper's cascaded-model head (1×1 classifier on the backbone output).
        aspp_rates: 3×3 branch rates; ``None`` derives them from the output stride ((6, 12, 18) at OS16,
            (12, 24, 36) at OS8); ``()`` is the mobile configuration (1×1 + image pooling only).
        image_pooling: include the image-level branch.
        separable_aspp: depthwise-separable 3×3 branches.
        aspp_dropout: dropout after the ASPP projection (0.1 here, torchvision uses 0.5).
        head_conv: torchvision's extra 3×3 conv + BN + ReLU after the projection.
        aux_loss: add the auxiliary FCN head on the stride-16 stage (outputs returned in training only).
        width_mult: MobileNetV2 width multiplier (1.0, 0.5, ...).
        channel_divisor: MobileNetV2 channel rounding (8: torchvision/ImageNet files; 1: TF DeepLab at width ≠ 1).
        first_unit_previous_dilation: torchvision's dilation convention (see ``ResNetBackbone``).
        align_corners: for every bilinear resize (TF DeepLab used True).
    """
    config = {"arch": "deeplabv3", **locals_config(locals())}
    body = make_backbone(backbone, output_stride, multi_grid, extra_blocks, first_unit_previous_dilation, width_mult,
                     channel_divisor)
    config["multi_grid"] = resolved_grid(body)
    check_classes(num_classes)
    aspp_module = _aspp(body.channels("out"), output_stride, aspp_rates, aspp_channels, image_pooling,
                        separable_aspp, aspp_dropout) if aspp else None
    if aspp_module is not None:
        config["aspp_rates"] = list(aspp_module.rates)
    head = DeepLabHead(body.channels("out"), num_classes, aspp_module, head_conv=head_conv)
    aux = FCNHead(body.channels("aux"), num_classes) if aux_loss else None
    return DeepLab(body, head, aux, align_corners=align_corners, config=config)


def deeplabv3plus(
    *,
    backbone: str = "xception65",
    num_classes: int = 21,
    output_stride: int = 16,
    multi_grid: Sequence[int] | None = None,
    aspp_rates: Sequence[int] | None = None,
    aspp_channels: int = 256,
    image_pooling: bool = True,
    separable_aspp: bool | None = None,
    aspp_dropout: float = 0.1,
    low_level_reduced: int = 48,
    decoder_channels: int = 256,
    separable_decoder: bool | None = None,
    aux_loss: bool = False,
    width_mult: float = 1.0,
    channel_divisor: int = 8,
    align_corners: bool = False,
) -> DeepLab:
    """DeepLabV3+ (arXiv:1802.02611): DeepLabV3's ASPP as encoder plus a decoder that fuses stride-4
    features. Separable convs in ASPP and decoder default to on for Xception (the paper's
    "Xception-65 + decoder + SC") and off otherwise; the other arguments are as in ``deeplabv3``."""
    separable_aspp = backbone == "xception65" if separable_aspp is None else separable_aspp
    separable_decoder = backbone == "xception65" if separable_decoder is None else separable_decoder
    config = {"arch": "deeplabv3plus", **locals_config(locals())}
    body = make_backbone(backbone, output_stride, multi_grid, 0, False, width_mult, channel_divisor)
    config["multi_grid"] = resolved_grid(body)
    check_classes(num_classes)
    aspp_module = _aspp(body.channels("out"), output_stride, aspp_rates, aspp_channels, image_pooling,
                        separable_aspp, aspp_dropout)
    config["aspp_rates"] = list(aspp_module.rates)
    head = DeepLabV3PlusHead(body.channels("low_level"), num_classes, aspp_module,
                             low_level_reduced=low_level_reduced, decoder_channels=decoder_channels,
                             separable=separable_decoder, align_corners=align_corners)
    aux = FCNHead(body.channels("aux"), num_classes) if aux_loss else None
    return DeepLab(body, head, aux, align_corners=align_corners, config=config)


def locals_config(arguments: dict[str, Any]) -> dict[str, Any]:
    """Builder arguments as plain data (lists, not tuples) so the config survives YAML and JSON."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items()
            if not k.startswith("_") and k != "config"}


def resolved_grid(body: nn.Module) -> list[int] | None:
    """The grid the backbone applies (its default when none was given), so the config rebuilds it exactly."""
    grid = getattr(body, "multi_grid", None)
    return None if grid is None else list(grid)


def check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


def make_backbone(name: str, output_stride: int, multi_grid: Sequence[int] | None, extra_blocks: int,
              first_unit_previous_dilation: bool, width_mult: float, channel_divisor: int) -> nn.Module:
    return build_backbone(name, output_stride=output_stride, multi_grid=multi_grid, extra_blocks=extra_blocks,
                          first_unit_previous_dilation=first_unit_previous_dilation, width_mult=width_mult,
                          channel_divisor=channel_divisor)


def _aspp(in_channels: int, output_stride: int, rates: Sequence[int] | None, channels: int, image_pooling: bool,
          separable: bool, dropout: float) -> ASPP:
    rates = aspp_rates_for(output_stride, PAPER_RATES_AT_OS16) if rates is None else tuple(rates)
    return ASPP(in_channels, rates=rates, out_channels=channels, image_pooling=image_pooling,
                separable=separable, dropout=dropout)
