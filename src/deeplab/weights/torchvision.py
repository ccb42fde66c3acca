"""torchvision-layout weights: DeepLabV3 checkpoints and ImageNet classifiers (ResNet, VGG-16, MobileNetV3).

torchvision's ``deeplabv3_resnet50/101`` differ from the paper: output stride 8 with the first unit of each
newly dilated stage keeping the previous dilation, ASPP rates (12, 24, 36), a 3×3 conv + BN + ReLU after
the projection, dropout 0.5, no multi-grid, and an FCN auxiliary head. Its ``deeplabv3_mobilenet_v3_large``
is the same head on MobileNetV3-Large at output stride 16, with the aux head on the unit that strides into
1/8. ``load_torchvision`` builds exactly that configuration from the file's own keys and loads it strictly,
so our model computes what torchvision's does with the same weights.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from torch import Tensor, nn

from ..models.backbones.resnet import DEPTHS, ResNetBackbone
from ..models.builders import deeplabv3
from ..models.deeplab import DeepLab
from .io import LoadReport, WeightsError, load_weights, read_state_dict

TORCHVISION_DEEPLABV3_DEPTHS = (50, 101)
MOBILENET_V3 = "mobilenet_v3_large"
TORCHVISION_HEAD = dict(aspp_rates=(12, 24, 36), head_conv=True, aspp_dropout=0.5)  # torchvision's DeepLabHead


def torchvision_deeplabv3_config(depth: int | str, num_classes: int = 21, aux_loss: bool = True) -> dict[str, Any]:
    """Builder arguments that reproduce torchvision's ``deeplabv3_resnet{depth}`` (50, 101) or, for
    ``"mobilenet_v3_large"``, its ``deeplabv3_mobilenet_v3_large``."""
    if depth == MOBILENET_V3:
        return dict(backbone=MOBILENET_V3, num_classes=num_classes, output_stride=16, aux_loss=aux_loss,
                    **TORCHVISION_HEAD)
    if depth not in TORCHVISION_DEEPLABV3_DEPTHS:
        raise ValueError(f"torchvision DeepLabV3 exists for ResNet depths {TORCHVISION_DEEPLABV3_DEPTHS} and "
                         f"{MOBILENET_V3!r}, got {depth!r}")
    return dict(backbone=f"resnet{depth}", num_classes=num_classes, output_stride=8, multi_grid=(1, 1, 1),
                aux_loss=aux_loss, first_unit_previous_dilation=True, **TORCHVISION_HEAD)


def is_torchvision_deeplabv3(payload: object) -> bool:
    """Whether a loaded file is a torchvision ``deeplabv3_resnet*`` / ``deeplabv3_mobilenet_v3_large`` state
    dict (by its keys)."""
    return isinstance(payload, Mapping) and "classifier.4.weight" in payload and (
        "backbone.conv1.weight" in payload or "backbone.0.0.weight" in payload)


def load_torchvision(
    source: str | os.PathLike | Mapping[str, Tensor], *, num_classes: int | None = None, finetune: bool = False,
    name: str | None = None,
) -> DeepLab:
    """Build torchvision's DeepLabV3 configuration for a torchvision checkpoint and load it strictly.

    The backbone (ResNet-50/101 or MobileNetV3-Large), class count and aux head are read from the file. Passing ``num_classes`` different
    from the file's requires ``finetune=True``: everything but the class layers is loaded. ``name``: what
    messages call an already read state dict (its path).
    """
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "state dict")
    state = read_state_dict(source)
    if "fc.weight" in state and "conv1.weight" in state:
        raise WeightsError(f"{name}: is an ImageNet ResNet classifier, not a DeepLabV3 checkpoint; "
                           "load it with deeplab.weights.load_backbone_weights(model, path)")
    if not is_torchvision_deeplabv3(state):
        raise WeightsError(f"{name}: not a torchvision deeplabv3_resnet50/101/mobilenet_v3_large state dict "
                           "(expected keys backbone.conv1.weight or backbone.0.0.weight, and classifier.4.weight)")
    file_classes = state["classifier.4.weight"].shape[0]
    has_aux = any(k.startswith("aux_classifier.") for k in state)
    if "backbone.0.0.weight" in state:  # MobileNetV3: its features' children sit right under "backbone."
        model = deeplabv3(**torchvision_deeplabv3_config(MOBILENET_V3, num_classes or file_classes, has_aux))
        load_weights(model, state, finetune=finetune, name=name)
        return model
    depth = _resnet_depth(state, "backbone.", name)
    if depth not in TORCHVISION_DEEPLABV3_DEPTHS:
        raise WeightsError(f"{name}: has a ResNet-{depth} backbone; torchvision's DeepLabV3 exists for ResNet "
                           f"depths {TORCHVISION_DEEPLABV3_DEPTHS} only (load other layouts with load_weights)")
    model = deeplabv3(**torchvision_deeplabv3_config(depth, num_classes or file_classes, has_aux))
    load_weights(model, state, finetune=finetune, name=name)
    return model


def load_resnet_imagenet(backbone: ResNetBackbone, source: str | os.PathLike | Mapping[str, Tensor]) -> LoadReport:
    """Load a torchvision ImageNet ResNet file (``resnet50-*.pth``, with ``fc.*``) into a ResNet backbone.

    ``fc.*`` is dropped (a classifier head the segmentation model does not have); the depth must match;
    the extra cascaded blocks (``layer5``..``layer7``), absent from ImageNet files, stay at initialisation.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    state = read_state_dict(source)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    depth = _resnet_depth(state, "", name)
    if depth != backbone.depth:
        raise WeightsError(f"{name}: holds a ResNet-{depth}, the model's backbone is ResNet-{backbone.depth}")
    return load_weights(backbone, state, allow_missing=("layer5.", "layer6.", "layer7."), name=name)


def _resnet_depth(state: Mapping[str, Tensor], prefix: str, name: str) -> int:
    """Identify the ResNet depth from the unit count per stage and the block type."""
    counts = tuple(len({k[len(prefix):].split(".")[1] for k in state if k.startswith(f"{prefix}layer{i}.")}) for i in range(1, 5))
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    for depth, (block, layers) in DEPTHS.items():
        if layers == counts and (block.expansion == 4) == bottleneck:
            return depth
    raise WeightsError(f"{name}: ResNet stages with {counts} units match no known depth "
                       f"({', '.join(f'resnet{d}' for d in DEPTHS)})")


def load_features_imagenet(backbone: nn.Module, source: str | os.PathLike | Mapping[str, Tensor], *,
                           prefix: str) -> LoadReport:
    """A torchvision ImageNet classifier whose convolutions are ``features.N`` (VGG-16, MobileNetV3-Large) into
    a backbone that keeps them under ``prefix`` (``"features."`` for VGG-16, ``""`` for MobileNetV3, whose
    layers are the backbone's own children); the classifier (``classifier.*``) is reported as skipped."""
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    state = read_state_dict(source)
    if not any(k.startswith("features.") for k in state):
        raise WeightsError(f"{name}: not a torchvision ImageNet classifier with features.N layers")
    mapped = {prefix + k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    report = load_weights(backbone, mapped, name=name)
    report.skipped = [k for k in state if not k.startswith("features.")]
    return report
