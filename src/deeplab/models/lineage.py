"""The earlier DeepLabs, as models to build, train, load and compare against.

- ``deeplabv1``: DeepLab-LargeFOV (arXiv:1412.7062) — VGG-16 at output stride 8 (pool4 and pool5 at stride 1,
  conv5 at rate 2), fc6 a 3×3 conv at rate 12 with 1024 channels, fc7 1×1 1024, dropout, fc8 to the classes.
- ``deeplabv2``: DeepLab v2 ASPP (arXiv:1606.00915) — four such branches at rates (6, 12, 18, 24) (ASPP-L;
  ASPP-S is rates (2, 4, 8, 12)) summed, no batch norm and no image pooling in the head, on ResNet-101 or
  VGG-16 at output stride 8; the ResNet has no Multi-Grid.

Both upsample their logits to the input size like every model here; their partner is the dense CRF
(``deeplab.crf``), as in the papers.
"""

from __future__ import annotations

from typing import Sequence

from .aspp_v2 import ASPP_L_RATES, LARGE_FOV_RATES, SummedASPPHead, rates_at
from .backbones import GRID_UNITS
from .builders import check_classes, locals_config, make_backbone, resolved_grid
from .deeplab import DeepLab
from .heads import FCNHead

V1_V2_OUTPUT_STRIDE = 8


def deeplabv1(
    *,
    backbone: str = "vgg16",
    num_classes: int = 21,
    output_stride: int = V1_V2_OUTPUT_STRIDE,
    aspp_rates: Sequence[int] | None = None,
    aspp_channels: int = 1024,
    aspp_dropout: float = 0.5,
    aux_loss: bool = False,
    align_corners: bool = False,
) -> DeepLab:
    """DeepLab v1 LargeFOV: one fc6 → fc7 → fc8 branch at rate 12 (at output stride 8; it follows the stride).

    Args: as ``deeplabv2``; ``aspp_rates`` defaults to LargeFOV's single rate.
    """
    config = {"arch": "deeplabv1", **locals_config(locals())}
    return _summed(config, backbone, num_classes, output_stride, None, aspp_rates or rates_at(output_stride,
                   LARGE_FOV_RATES), aspp_channels, aspp_dropout, aux_loss, 1.0, 8, align_corners)


def deeplabv2(
    *,
    backbone: str = "resnet101",
    num_classes: int = 21,
    output_stride: int = V1_V2_OUTPUT_STRIDE,
    multi_grid: Sequence[int] | None = None,
    aspp_rates: Sequence[int] | None = None,
    aspp_channels: int = 1024,
    aspp_dropout: float = 0.5,
    aux_loss: bool = False,
    width_mult: float = 1.0,
    channel_divisor: int = 8,
    align_corners: bool = False,
) -> DeepLab:
    """DeepLab v2: summed atrous branches (fc6 3×3 at each rate → fc7 1×1 → fc8 1×1), no BN, no pooling.

    Args:
        backbone: ``resnet101`` or ``vgg16`` as in the paper (any backbone works).
        output_stride: 8 as in the paper; the rates follow it (``rate × output_stride`` constant).
        multi_grid: default none (all ones): DeepLab v2 predates Multi-Grid.
        aspp_rates: the branches' rates at ``output_stride``; default ASPP-L (6, 12, 18, 24) at stride 8
            (``deeplab.models.aspp_v2.ASPP_S_RATES`` for ASPP-S).
        aspp_channels, aspp_dropout: fc6/fc7 width (1024) and the dropout after each (0.5); ``aspp_channels=0``
            makes each branch one 3×3 conv straight to the classes, the authors' released ResNet-101 model.
        aux_loss, width_mult, channel_divisor, align_corners: as in ``deeplabv3``.
    """
    config = {"arch": "deeplabv2", **locals_config(locals())}
    if multi_grid is None and backbone in GRID_UNITS:
        multi_grid = (1,) * GRID_UNITS[backbone]
    return _summed(config, backbone, num_classes, output_stride, multi_grid,
                   aspp_rates or rates_at(output_stride, ASPP_L_RATES), aspp_channels, aspp_dropout, aux_loss,
                   width_mult, channel_divisor, align_corners)


def _summed(config: dict, backbone: str, num_classes: int, output_stride: int, multi_grid: Sequence[int] | None,
            rates: Sequence[int], channels: int, dropout: float, aux_loss: bool, width_mult: float,
            channel_divisor: int, align_corners: bool) -> DeepLab:
    body = make_backbone(backbone, output_stride, multi_grid, 0, False, width_mult, channel_divisor)
    check_classes(num_classes)
    config["multi_grid"] = resolved_grid(body)
    head = SummedASPPHead(body.channels("out"), num_classes, rates, channels=channels, dropout=dropout)
    config["aspp_rates"] = list(head.rates)
    aux = FCNHead(body.channels("aux"), num_classes) if aux_loss else None
    return DeepLab(body, head, aux, align_corners=align_corners, config=config)
