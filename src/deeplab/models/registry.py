"""Models by name: ``BUILDERS`` (a plain dict, no registry machinery), ``list_models()``, ``get_model(name)`` and
``build_model(config)``, which rebuilds a model from its ``model.config`` (what model files store)."""

from __future__ import annotations

from typing import Any

from .backbones import BACKBONES
from .builders import deeplabv3, deeplabv3plus
from .deeplab import DeepLab
from .lineage import deeplabv1, deeplabv2

BUILDERS = {"deeplabv1": deeplabv1, "deeplabv2": deeplabv2, "deeplabv3": deeplabv3, "deeplabv3plus": deeplabv3plus}
# The backbones each architecture is named with: every one for V3/V3+, the papers' for v1 (VGG-16, LargeFOV)
# and v2 (ResNet-101 and VGG-16); the builders take any backbone.
NAMED_BACKBONES = {"deeplabv1": ("vgg16",), "deeplabv2": ("resnet101", "vgg16"),
                   "deeplabv3": tuple(BACKBONES), "deeplabv3plus": tuple(BACKBONES)}
ARCHITECTURES = tuple(BUILDERS)


def list_models() -> list[str]:
    """Every named model: ``<architecture>_<backbone>``, e.g. ``deeplabv3_resnet101``."""
    return [f"{arch}_{name}" for arch in ARCHITECTURES for name in NAMED_BACKBONES[arch]]


def get_model(name: str, **kwargs: Any) -> DeepLab:
    """Build a named model (see ``list_models()``); keyword arguments go to the builder."""
    for arch in sorted(ARCHITECTURES, key=len, reverse=True):
        prefix = arch + "_"
        if name.startswith(prefix) and name[len(prefix):] in NAMED_BACKBONES[arch]:
            return BUILDERS[arch](backbone=name[len(prefix):], **kwargs)
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")


def build_model(config: dict[str, Any]) -> DeepLab:
    """Rebuild a model from its ``model.config`` (e.g. as stored in a checkpoint)."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in BUILDERS:
        raise ValueError(f"model config has arch {arch!r}; valid: {', '.join(BUILDERS)}")
    for key in ("multi_grid", "aspp_rates"):
        if isinstance(config.get(key), list):
            config[key] = tuple(config[key])
    return BUILDERS[arch](**config)
