"""Model size and cost: parameter counts and GFLOPs, computed on the meta device (no memory, no time).

GFLOPs follow torchvision's and fvcore's convention — one multiply-add counts as one FLOP — so the numbers
compare with torchvision's model tables (e.g. DeepLabV3-ResNet50 at 520×520: 178.72 with its aux head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .deeplab import DeepLab


@dataclass(frozen=True)
class Complexity:
    parameters: int
    gflops: float  # multiply-adds / 1e9


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: DeepLab, height: int, width: int, *, include_aux: bool = False) -> float:
    """Multiply-adds (×1e-9) of one forward pass on a 1×3×H×W input, counted on the meta device.

    ``include_aux`` adds the auxiliary head (torchvision runs it at inference too; we do not).
    """
    meta = model if _on_meta(model) else _meta_copy(model)
    meta.eval()
    image = torch.empty(1, 3, height, width, device="meta")
    with FlopCounterMode(display=False) as counter:
        features = meta.backbone(image)
        meta.classifier(features)
        if include_aux and meta.aux_classifier is not None:
            meta.aux_classifier(features["aux"])
    return counter.get_total_flops() / 2 / 1e9  # the counter counts a multiply-add as 2 FLOPs


def measure(build: Callable[..., DeepLab], height: int, width: int, **kwargs: Any) -> Complexity:
    """Build on the meta device (instant even for ResNet-152) and measure."""
    with torch.device("meta"):
        model = build(**kwargs)
    return Complexity(count_parameters(model), count_gflops(model, height, width))


def _on_meta(model: nn.Module) -> bool:
    return all(p.device.type == "meta" for p in model.parameters())


def _meta_copy(model: DeepLab) -> DeepLab:
    import copy

    return copy.deepcopy(model).to("meta")
