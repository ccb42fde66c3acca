"""Models: DeepLabV3 / DeepLabV3+ builders, the model class, heads, ASPP and backbones."""

from .aspp import ASPP, aspp_rates_for
from .backbones import BACKBONES, build_backbone
from .builders import build_model, deeplabv3, deeplabv3plus, get_model, list_models
from .deeplab import DeepLab
from .heads import DeepLabHead, DeepLabV3PlusHead, FCNHead

__all__ = ["ASPP", "BACKBONES", "DeepLab", "DeepLabHead", "DeepLabV3PlusHead", "FCNHead", "aspp_rates_for",
           "build_backbone", "build_model", "deeplabv3", "deeplabv3plus", "get_model", "list_models"]
