"""A 3×3 atrous convolution that computes only the taps that can land on the feature map.

With rate ``r`` and zero padding ``r``, the outer rows of the 3×3 filter read ``r`` pixels above and below
every output position; on a map of height ``H ≤ r`` those reads always fall in the padding, so they add
exactly zero. The paper (§3.3, Fig. 4) shows this degeneration as the rate approaches the map size —
at ``r ≥ H`` and ``r ≥ W`` the filter is its centre tap, a 1×1 convolution. ``AtrousConv2d`` drops such rows
and columns of the filter before convolving: the same result (to float rounding) for fewer FLOPs, e.g. the
rate-36 branch of ASPP at output stride 8 on the 0.5 scale of a 513² image (33×33 features) does 1/9 of the work.

In bf16 on a CPU with AMX, oneDNN's convolution kernel is many times slower on wide inputs at large rates than
on the same convolution undilated (2048 → 256 channels at 65×65, measured on a Xeon: 37 ms undilated, 233 ms
at rate 12, 586 ms at rate 36 — slower than fp32's 87 ms), and those are ASPP's branches on a ResNet or
Xception. There ``AtrousConv2d`` computes the kept taps as one 1×1 convolution with a block of output channels
per tap — a plain matrix multiply, which runs at the AMX rate — and adds each block, shifted by its tap's
offset, into an fp32 sum: the same convolution (to float rounding; the fp32 sum rounds less than the kernel's
bf16 output), 2.7–12× faster on those branches (``taps_as_one_matmul`` says where).

Graph capture for export (tracing, ONNX, ``torch.export``) always records the full filter, since an exported
graph must hold for every input size; ``torch.compile`` specialises on the shape, so it keeps the pruning
and the one-matmul form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.machine import has_amx
from .depthwise import Conv2d, conv2d

# oneDNN's AMX bf16 convolution slows down past these (native / one matmul, ms, 2 threads, Xeon with AMX, 256
# output channels): 2048 inputs at 33×33 r2 15.5 / 26.7, r6 55.1 / 27.4; at 65×65 r2 52.1 / 61.1, r6 161 / 70,
# r12 233 / 59; 1024 inputs at 65×65 r12 33.0 / 37.9 (so left to the kernel), r24 69.9 / 35.7
ONE_MATMUL_MIN_CHANNELS = 2048
ONE_MATMUL_MIN_RATE = 6


def _capturing_for_export() -> bool:
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


class AtrousConv2d(Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict names; depthwise ones in fp32 under bf16 autocast, as
    ``depthwise.Conv2d``) whose 3×3 "same" atrous filter skips the taps that
    only ever read padding on the input it is given."""

    def _prunable(self) -> bool:
        return (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.padding_mode == "zeros"
                and tuple(self.padding) == tuple(self.dilation))

    def kept_taps(self, height: int, width: int) -> tuple[slice, slice]:
        """The filter rows and columns that can touch an ``height``×``width`` input (all, or the centre)."""
        if not self._prunable():
            return slice(None), slice(None)
        rows = slice(1, 2) if self.dilation[0] >= height else slice(None)
        cols = slice(1, 2) if self.dilation[1] >= width else slice(None)
        return rows, cols

    def taps_as_one_matmul(self, x: Tensor) -> bool:
        """Whether this call computes its taps as one matrix multiply: a wide input at a large rate, in bf16
        (autocast or bf16 tensors) on a CPU with AMX — where oneDNN's dilated kernel is the slow one — and not
        for training: with the backward pass the dilated kernel is as fast or faster (a 2048 → 256 branch,
        batch 2, forward and backward: 33×33 at rate 6 238 against 241 ms, 65×65 at rate 12 860 against 1,012)."""
        if not (self._prunable() and self.groups == 1 and x.device.type == "cpu"):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return False
        if self.in_channels < ONE_MATMUL_MIN_CHANNELS or min(self.dilation) < ONE_MATMUL_MIN_RATE:
            return False
        bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                             and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return bf16 and has_amx()

    def _shifted_taps(self, x: Tensor, rows: slice, cols: slice) -> Tensor:
        """The kept taps' products as one 1×1 convolution (``out × taps`` channels: each output channel's taps
        side by side, which a channels-last filter already holds in that order, so laying it out is a view),
        each tap's channels added into an fp32 sum at its offset, over the output positions where the tap
        reads the map (elsewhere it reads the zero padding). The centre tap reads everywhere: it starts the sum."""
        row_offsets = [0] if rows.start == 1 else [-self.dilation[0], 0, self.dilation[0]]
        col_offsets = [0] if cols.start == 1 else [-self.dilation[1], 0, self.dilation[1]]
        offsets = [(dy, dx) for dy in row_offsets for dx in col_offsets]
        weight = self.weight[:, :, rows, cols].to(torch.bfloat16).permute(0, 2, 3, 1)
        products = F.conv2d(x, weight.reshape(-1, self.in_channels, 1, 1))
        taps, (height, width) = len(offsets), x.shape[-2:]
        total = torch.empty(x.shape[0], self.out_channels, height, width, dtype=torch.float32, device=x.device,
                            memory_format=torch.channels_last)
        total.copy_(products[:, offsets.index((0, 0))::taps])
        for index, (dy, dx) in enumerate(offsets):
            top, bottom = max(0, -dy), min(height, height - dy)
            left, right = max(0, -dx), min(width, width - dx)
            if (dy, dx) != (0, 0) and top < bottom and left < right:
                total[:, :, top:bottom, left:right] += products[:, index::taps, top + dy:bottom + dy,
                                                                left + dx:right + dx]
        if self.bias is not None:
            total += self.bias.view(1, -1, 1, 1)
        return total.to(torch.bfloat16)

    def forward(self, x: Tensor) -> Tensor:
        if _capturing_for_export():
            return super().forward(x)
        rows, cols = self.kept_taps(x.shape[-2], x.shape[-1])
        if self.taps_as_one_matmul(x):
            return self._shifted_taps(x, rows, cols)
        if rows == slice(None) and cols == slice(None):
            return super().forward(x)
        padding = (0 if rows.start == 1 else self.padding[0], 0 if cols.start == 1 else self.padding[1])
        return conv2d(x, self.weight[:, :, rows, cols], self.bias, 1, padding, self.dilation, self.groups)
