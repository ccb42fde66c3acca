"""Depthwise convolutions trained in fp32 under CPU bf16 autocast.

oneDNN's bf16 depthwise kernels train slower than its fp32 ones on CPU: a depthwise 3×3 is memory-bound, so
bf16 saves little arithmetic, and for the strided bf16 backward pass the dispatcher picks a general brgemm
kernel. Measured on a Xeon with AMX (2 threads, batch 8, forward / forward + backward, ms): 96 channels at
120×160 stride 2 fp32 4.1 / 89, bf16 10.1 / 198; 960 channels at 15×20 rate 2 fp32 1.7 / 29, bf16 2.4 / 74;
144 channels at 60×80 fp32 3.1 / 21, bf16 4.4 / 30. So while autograd records, a depthwise convolution under
bf16 autocast reads its input in fp32 and hands bf16 on: the DeepLabV3+ MobileNetV2 CamVid training step went
from 6.2 to 7.3 images/s timed alone (5.55 to 6.97 in `deeplab train`, loader included). The arithmetic is
fp32's — closer to fp32 than the bf16 kernel, never further. At inference (batch 1, no backward) the bf16
kernel is the faster one (the CamVid DeepLabV3-MobileNetV2 in eager bf16: 33.5 ms, 50.7 with fp32 depthwise),
so it keeps it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _in_cpu_bf16_autocast(x: Tensor) -> bool:
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Sequence[int] | int = 1,
           padding: Sequence[int] | int = 0, dilation: Sequence[int] | int = 1, groups: int = 1) -> Tensor:
    """``F.conv2d``; a depthwise one (one input channel per group) under CPU bf16 autocast, while autograd
    records, is computed in fp32 and returned in bf16, as autocast would return it."""
    # autocast first: graph capture for export runs without it, so shapes (traced values there) are never read
    training = _in_cpu_bf16_autocast(x) and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if not (training and groups > 1 and weight.shape[1] == 1):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    with torch.autocast("cpu", enabled=False):
        out = F.conv2d(x.float(), weight.float(), None if bias is None else bias.float(), stride, padding,
                       dilation, groups)
    return out.to(torch.bfloat16)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict names) whose depthwise form trains in fp32 under CPU bf16
    autocast (``conv2d``); every other convolution is ``nn.Conv2d``'s. The model's depthwise layers use it."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(x, weight, bias)
        return conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


__all__ = ["Conv2d", "conv2d"]
