"""A 3×3 atrous convolution that computes only the taps that can land on the feature map.

With rate ``r`` and zero padding ``r``, the outer rows of the 3×3 filter read ``r`` pixels above and below
every output position; on a map of height ``H ≤ r`` those reads always fall in the padding, so they add
exactly zero. The paper (§3.3, Fig. 4) shows this degeneration as the rate approaches the map size —
at ``r ≥ H`` and ``r ≥ W`` the filter is its centre tap, a 1×1 convolution. ``AtrousConv2d`` drops such rows
and columns of the filter before convolving: the same result (to float rounding) for fewer FLOPs, e.g. the
rate-36 branch of ASPP at output stride 8 on the 0.5 scale of a 513² image (33×33 features) does 1/9 of the work.

Graph capture for export (tracing, ONNX, ``torch.export``) always records the full filter, since an exported
graph must hold for every input size; ``torch.compile`` specialises on the shape, so it keeps the pruning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _capturing_for_export() -> bool:
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


class AtrousConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict names) whose 3×3 "same" atrous filter skips the taps that
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

    def forward(self, x: Tensor) -> Tensor:
        if _capturing_for_export():
            return super().forward(x)
        rows, cols = self.kept_taps(x.shape[-2], x.shape[-1])
        if rows == slice(None) and cols == slice(None):
            return super().forward(x)
        padding = (0 if rows.start == 1 else self.padding[0], 0 if cols.start == 1 else self.padding[1])
        return F.conv2d(x, self.weight[:, :, rows, cols], self.bias, 1, padding, self.dilation, self.groups)
