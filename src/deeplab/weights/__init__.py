"""Weights: the self-describing model-file format and every importer of other people's files.

- ``card.py``: ``ModelCard``, what a model file says about itself (config, classes, normalisation, ...).
- ``modelfile.py``: ``save_model`` / ``load_model`` / ``read_model_file`` — deeplab model files and checkpoints.
- ``io.py``: ``read_file`` (``weights_only=True``), ``load_weights`` with key/shape errors, ``WeightsError``.
- ``torchvision.py``: a torchvision ``deeplabv3_resnet50/101/mobilenet_v3_large`` checkpoint → our model;
  ImageNet ResNet, VGG-16 and MobileNetV3-Large classifiers.
- ``mobilenet_imagenet.py``: ImageNet MobileNetV2 files (the ``pytorch-mobilenet-v2`` port layout).
- ``tflite.py`` (+ ``tflite_graph.py``, ``tflite_head.py``): the authors' TFLite DeepLab models
  (``pip install 'deeplab[tflite]'``).
"""

from __future__ import annotations

import os
from typing import Mapping

from torch import Tensor, nn

from ..models.backbones.mobilenet import MobileNetV2Backbone
from ..models.backbones.mobilenet_v3 import MobileNetV3LargeBackbone
from ..models.backbones.resnet import ResNetBackbone
from ..models.backbones.vgg import VGG16Backbone
from .card import ModelCard
from .io import LoadReport, WeightsError, load_weights, read_file, read_state_dict
from .mobilenet_imagenet import convert_mobilenet_v2_imagenet, load_mobilenet_v2_imagenet
from .modelfile import load_model, read_model_file, save_model
from .tflite import import_tflite_file, load_tflite, read_tflite_tensors, tflite_card
from .torchvision import load_features_imagenet, load_resnet_imagenet, load_torchvision, torchvision_deeplabv3_config


def load_backbone_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Tensor]) -> LoadReport:
    """Load ImageNet classification weights into ``model``'s backbone (or into a backbone itself)."""
    backbone = getattr(model, "backbone", model)
    if isinstance(backbone, ResNetBackbone):
        return load_resnet_imagenet(backbone, source)
    if isinstance(backbone, MobileNetV2Backbone):
        return load_mobilenet_v2_imagenet(backbone, source)
    if isinstance(backbone, VGG16Backbone):
        return load_features_imagenet(backbone, source, prefix="features.")
    if isinstance(backbone, MobileNetV3LargeBackbone):
        return load_features_imagenet(backbone, source, prefix="")
    raise WeightsError(f"no ImageNet importer for backbone {type(backbone).__name__}; supported: ResNet, "
                       "MobileNetV2, MobileNetV3-Large and VGG-16 backbones")


__all__ = ["LoadReport", "ModelCard", "WeightsError", "convert_mobilenet_v2_imagenet", "import_tflite_file",
           "load_backbone_weights", "load_mobilenet_v2_imagenet", "load_model", "load_resnet_imagenet",
           "load_tflite", "load_torchvision", "load_weights", "read_file", "read_model_file", "read_state_dict",
           "read_tflite_tensors", "save_model", "tflite_card", "torchvision_deeplabv3_config"]
