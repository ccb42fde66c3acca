"""Loading and importing weights: torchvision-layout checkpoints and third-party ImageNet files.

- ``load_torchvision(path)``: a torchvision ``deeplabv3_resnet50/101`` checkpoint → our model, strictly.
- ``load_backbone_weights(model, path)``: ImageNet weights into the backbone (torchvision ResNet files
  with ``fc.*``; the ``pytorch-mobilenet-v2`` / torchvision MobileNetV2 layouts).
- ``load_weights(model, path, finetune=...)``: any state dict in our layout, with key/shape errors.
- ``load_tflite(path)``: the authors' TFLite DeepLab models (``pip install 'deeplab[tflite]'``).
"""

from __future__ import annotations

import os
from typing import Mapping

from torch import Tensor, nn

from ..models.backbones.mobilenet import MobileNetV2Backbone
from ..models.backbones.resnet import ResNetBackbone
from .io import LoadReport, WeightsError, load_weights, read_file, read_state_dict
from .mobilenet_imagenet import convert_mobilenet_v2_imagenet, load_mobilenet_v2_imagenet
from .tflite import load_tflite, read_tflite_tensors, tflite_preprocessing
from .torchvision import load_resnet_imagenet, load_torchvision, torchvision_deeplabv3_config


def load_backbone_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Tensor]) -> LoadReport:
    """Load ImageNet classification weights into ``model``'s backbone (or into a backbone itself)."""
    backbone = getattr(model, "backbone", model)
    if isinstance(backbone, ResNetBackbone):
        return load_resnet_imagenet(backbone, source)
    if isinstance(backbone, MobileNetV2Backbone):
        return load_mobilenet_v2_imagenet(backbone, source)
    raise WeightsError(f"no ImageNet importer for backbone {type(backbone).__name__}; "
                       "supported: ResNetBackbone, MobileNetV2Backbone")


__all__ = ["LoadReport", "WeightsError", "convert_mobilenet_v2_imagenet", "load_backbone_weights",
           "load_mobilenet_v2_imagenet", "load_resnet_imagenet", "load_tflite", "read_tflite_tensors", "tflite_preprocessing", "load_torchvision", "load_weights", "read_file",
           "read_state_dict", "torchvision_deeplabv3_config"]
