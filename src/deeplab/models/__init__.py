"""Models: the DeepLab v1/v2/v3/v3+ builders, the model class, heads, ASPP and backbones."""

from .aspp import ASPP, aspp_rates_for
from .backbones import BACKBONES, build_backbone
from .builders import deeplabv3, deeplabv3plus
from .deeplab import DeepLab
from .heads import DeepLabHead, DeepLabV3PlusHead, FCNHead
from .lineage import deeplabv1, deeplabv2
from .registry import ARCHITECTURES, BUILDERS, build_model, get_model, list_models

__all__ = ["ARCHITECTURES", "ASPP", "BACKBONES", "BUILDERS", "DeepLab", "DeepLabHead", "DeepLabV3PlusHead",
           "FCNHead", "aspp_rates_for", "build_backbone", "build_model", "deeplabv1", "deeplabv2", "deeplabv3",
           "deeplabv3plus", "get_model", "list_models"]
