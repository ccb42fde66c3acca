"""Batch norm folded into the convolution before it, for inference: ``y = γ·(W∗x + b − μ)/√(σ² + ε) + β`` is
the convolution with weights ``W·s`` and bias ``(b − μ)·s + β``, ``s = γ/√(σ² + ε)`` — exact up to float
rounding, one pass over the activations fewer per conv (the BN's read and write).

A BN is folded only where the convolution's output goes to it alone: a ``Conv2d`` directly followed by a
``BatchNorm2d`` in an ``nn.Sequential``, or the attribute pairs our blocks use (``convN``/``bnN``,
``X``/``X_bn``). Any BN left over is reported, so a new block shape cannot be skipped silently.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias.detach() if bn.affine else 0.0) - bn.running_mean * scale
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype))


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BN name) among ``module``'s direct children whose conv output feeds only that BN."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d)]
    pairs = []
    for name, child in children.items():
        if not isinstance(child, nn.BatchNorm2d):
            continue
        candidates = [name[: -len("_bn")]] if name.endswith("_bn") else \
            ["conv" + name[2:]] if name.startswith("bn") else []
        pairs += [(c, name) for c in candidates if isinstance(children.get(c), nn.Conv2d)]
    return pairs


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> tuple[nn.Module, list[str]]:
    """The model (a copy unless ``inplace``) in eval mode with every foldable BN folded into its conv and
    replaced by ``nn.Identity``; and the names of the BNs that could not be folded (empty for our models)."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        for conv_name, bn_name in _pairs(module):
            bn = getattr(module, bn_name)
            if bn.track_running_stats and bn.running_mean is not None:
                _fold_pair(getattr(module, conv_name), bn)
                setattr(module, bn_name, nn.Identity())
    model.eval()  # the Identity modules that replaced the BNs too
    left = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return model, left
