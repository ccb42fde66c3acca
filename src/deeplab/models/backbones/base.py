"""What every backbone shares: the feature contract and the output-stride arithmetic.

A backbone maps an image batch to a dict of feature maps:

- ``"low_level"``: stride-4 features (the DeepLabV3+ decoder's skip input),
- ``"aux"``: the stage before the last one (the auxiliary FCN head's input),
- ``"out"``: the final, densest-affordable features the ASPP reads.

Each backbone lists these in ``feature_info`` as ``FeatureInfo(name, channels, reduction)`` where
``reduction`` is the *actual* stride of that map at the backbone's current ``output_stride``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor, nn

VALID_OUTPUT_STRIDES = (8, 16, 32)  # what every backbone reaches
ALL_OUTPUT_STRIDES = (8, 16, 32, 64, 128, 256)  # ResNet with the paper's extra blocks reaches up to 256
FEATURE_NAMES = ("low_level", "aux", "out")


@dataclass(frozen=True)
class FeatureInfo:
    """One returned feature map: its dict key, channel count and stride relative to the input."""

    name: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class StagePlan:
    """How one stage runs at a given output stride.

    ``stride`` is the stride its first unit applies (1 once the output stride is reached),
    ``entry_dilation`` the dilation in force before the stage (torchvision and the TF MobileNet keep it
    for the unit that would have strided), and ``dilation`` the dilation of the stage's units.
    """

    stride: int
    entry_dilation: int
    dilation: int


def check_output_stride(output_stride: int, valid: Sequence[int] = VALID_OUTPUT_STRIDES) -> int:
    """Return ``output_stride`` or raise ``ValueError`` naming the allowed values."""
    if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride not in valid:
        raise ValueError(f"output_stride must be one of {tuple(valid)}, got {output_stride!r}")
    return output_stride


def plan_stages(stage_strides: Sequence[int], output_stride: int, stem_stride: int = 1) -> list[StagePlan]:
    """Dilate in the stage loop: once the running stride reaches ``output_stride``, later stages keep
    stride 1 and multiply their dilation by the stride they gave up (so the field of view is kept).

    >>> [(p.stride, p.dilation) for p in plan_stages([1, 2, 2, 2], 16, stem_stride=4)]
    [(1, 1), (2, 1), (2, 1), (1, 2)]
    """
    running, dilation = stem_stride, 1
    plans = []
    for stride in stage_strides:
        entry = dilation
        if running * stride > output_stride:
            dilation *= stride
            plans.append(StagePlan(1, entry, dilation))
        else:
            running *= stride
            plans.append(StagePlan(stride, entry, dilation))
    return plans


def set_conv_geometry(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    """Change a conv's stride and dilation in place, keeping 'same' padding for odd kernels.

    Parameters are untouched, which is what lets one set of weights run at several output strides.
    """
    kernel = conv.kernel_size[0]
    conv.stride = (stride, stride)
    conv.dilation = (dilation, dilation) if kernel > 1 else (1, 1)
    conv.padding = ((kernel - 1) // 2 * conv.dilation[0],) * 2


def init_weights(module: nn.Module) -> None:
    """torchvision's initialisation (He-normal fan-out convs, BN at identity), so training from scratch
    behaves like theirs."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:  # only VGG's convs have biases (no batch norm follows them)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Backbone(nn.Module):
    """Base class: subclasses build their layers, fill ``feature_info`` and implement the two methods;
    ``valid_output_strides`` are the strides the architecture can reach."""

    feature_info: list[FeatureInfo]
    output_stride: int
    valid_output_strides: tuple[int, ...] = VALID_OUTPUT_STRIDES

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError  # abstract

    def set_output_stride(self, output_stride: int) -> None:  # pragma: no cover - abstract
        """Re-plan strides and dilations in place for a new output stride (same parameters)."""
        raise NotImplementedError  # abstract

    def channels(self, name: str) -> int:
        """Channel count of the feature ``name`` (one of ``FEATURE_NAMES``)."""
        return next(info.channels for info in self.feature_info if info.name == name)
