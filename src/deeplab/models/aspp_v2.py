"""The DeepLab v1/v2 heads: atrous branches of fc6 (3×3 atrous) → fc7 (1×1) → fc8 (1×1 to the classes), with
ReLU and dropout, **summed** — no batch norm, no image pooling, no concatenation (arXiv:1606.00915 §3.2).

- DeepLab v2 ASPP-L: rates (6, 12, 18, 24) at output stride 8; ASPP-S: rates (2, 4, 8, 12).
- DeepLab v1 LargeFOV (arXiv:1412.7062): one branch at rate 12.

Rates are given at output stride 8, where the papers define them, and follow the output stride like the
DeepLabV3 ASPP's (``rate × output_stride`` constant).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .aspp import rescale_rates
from .atrous import AtrousConv2d

ASPP_L_RATES = (6, 12, 18, 24)
ASPP_S_RATES = (2, 4, 8, 12)
LARGE_FOV_RATES = (12,)
RATES_OUTPUT_STRIDE = 8  # the stride the papers' rates are given at
FC_CHANNELS = 1024
DROPOUT = 0.5


class AtrousBranch(nn.Sequential):
    """fc6 (3×3, dilation ``rate``) → ReLU → dropout → fc7 (1×1) → ReLU → dropout → fc8 (1×1 to the classes);
    named ``0``..``6`` so fc6 is ``N.0``, fc7 ``N.3``, fc8 ``N.6``. ``channels=0`` is the authors' released
    ResNet-101 v2 head: one 3×3 atrous conv straight to the classes."""

    def __init__(self, in_channels: int, num_classes: int, rate: int, channels: int = FC_CHANNELS,
                 dropout: float = DROPOUT) -> None:
        if channels == 0:
            super().__init__(AtrousConv2d(in_channels, num_classes, 3, padding=rate, dilation=rate))
            return
        super().__init__(AtrousConv2d(in_channels, channels, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Conv2d(channels, num_classes, 1))

    @property
    def rate(self) -> int:
        return self[0].dilation[0]

    def set_rate(self, rate: int) -> None:
        self[0].dilation, self[0].padding = (rate, rate), (rate, rate)


class SummedASPPHead(nn.Module):
    """The v1/v2 head: class scores of every branch summed. ``aspp`` is the head itself, so the model's
    ``aspp_rates`` and output-stride switching treat it like the DeepLabV3 ASPP."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int], *, channels: int = FC_CHANNELS,
                 dropout: float = DROPOUT) -> None:
        super().__init__()
        rates = tuple(rates)
        if not rates or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
            raise ValueError(f"the summed ASPP needs one or more positive integer rates, got {rates!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 0:
            raise ValueError(f"aspp_channels must be a positive integer (fc6/fc7 width) or 0 (one conv to the "
                             f"classes), got {channels!r}")
        self.branches = nn.ModuleList(AtrousBranch(in_channels, num_classes, rate, channels, dropout)
                                      for rate in rates)
        for module in self.modules():  # DeepLab's initialisation: fc8 from N(0, 0.01), biases 0
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for branch in self.branches:
            nn.init.normal_(branch[-1].weight, std=0.01)

    @property
    def aspp(self) -> "SummedASPPHead":
        return self

    @property
    def rates(self) -> tuple[int, ...]:
        return tuple(branch.rate for branch in self.branches)

    def set_rates(self, rates: Sequence[int]) -> None:
        if len(tuple(rates)) != len(self.branches):
            raise ValueError(f"this head has {len(self.branches)} branches, got rates {tuple(rates)!r}")
        for branch, rate in zip(self.branches, rates):
            branch.set_rate(rate)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = features["out"]
        return torch.stack([branch(x) for branch in self.branches]).sum(0)


def rates_at(output_stride: int, rates_at_os8: Sequence[int]) -> tuple[int, ...]:
    """The papers' rates (given at output stride 8) at another output stride."""
    return rescale_rates(rates_at_os8, RATES_OUTPUT_STRIDE, output_stride)
