"""Activation checkpointing of the backbone: each residual block keeps only its input for the backward pass
and runs its forward again when the gradients need it — training memory traded for about a third more
compute, with the same gradients.

Batch norm makes the trade subtle: the recomputation runs the block's batch norms in training mode a second
time, which would move their running statistics twice per step. The recomputation normalises with the
batch's own statistics as the first pass did (so the activations are the same), and the running statistics
are put back afterwards, so after a step they equal those without checkpointing, bit for bit.

The blocks keep their classes' parameter names (the class is swapped for a subclass whose ``forward``
checkpoints), so state dicts, checkpoints and torchvision files are unaffected.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .backbones.mobilenet import InvertedResidual
from .backbones.mobilenet_v3 import InvertedResidualV3
from .backbones.resnet import BasicBlock, Bottleneck
from .backbones.xception import XceptionBlock

BLOCKS: tuple[type[nn.Module], ...] = (BasicBlock, Bottleneck, InvertedResidual, InvertedResidualV3, XceptionBlock)
_SUBCLASSES: dict[type, type] = {}


@contextlib.contextmanager
def _statistics_untouched(block: nn.Module) -> Iterator[None]:
    """Around the recomputation: the batch norms' running statistics are put back as they were."""
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[buffer.clone() for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, (mean, var, count) in zip(norms, saved):
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
                norm.num_batches_tracked.copy_(count)


def _checkpointed(cls: type[nn.Module]) -> type[nn.Module]:
    if cls not in _SUBCLASSES:
        def forward(self: nn.Module, *args: Any) -> Any:
            plain = super(subclass, self).forward
            if not (self.training and torch.is_grad_enabled()):
                return plain(*args)
            contexts = lambda: (contextlib.nullcontext(), _statistics_untouched(self))  # noqa: E731
            return checkpoint(plain, *args, use_reentrant=False, context_fn=contexts)

        subclass = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": forward, "__module__": __name__})
        _SUBCLASSES[cls] = subclass
    return _SUBCLASSES[cls]


def checkpoint_backbone(model: nn.Module) -> int:
    """Checkpoint every residual block of ``model.backbone`` in place; returns how many blocks (0 for a
    backbone without residual blocks, e.g. VGG-16)."""
    count = 0
    for module in model.backbone.modules():
        if type(module) in BLOCKS:
            module.__class__ = _checkpointed(type(module))
            count += 1
    return count


def is_checkpointed(module: nn.Module) -> bool:
    return type(module) in _SUBCLASSES.values()
