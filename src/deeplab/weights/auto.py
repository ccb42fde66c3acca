"""One entry point for every model file a user may point at: ``load_any(path)``.

- ``.tflite``: the authors' TF model-zoo DeepLab (imported into our PyTorch model);
- ``.onnx``: an exported graph, run by ONNX Runtime (a backend callable, no torch model);
- a deeplab model file or training checkpoint (``.pt``/``.pth``/``.safetensors`` with our header);
- a torchvision ``deeplabv3_resnet50/101`` state dict.

The metadata says how to normalise inputs and what the classes are; files that carry none get torchvision's
conventions (ImageNet mean/std, VOC classes when there are 21 outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..models.deeplab import DeepLab
from .io import WeightsError, read_file

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class LoadedModel:
    model: DeepLab | None
    metadata: dict[str, Any] = field(default_factory=dict)
    backend: Callable[..., Any] | None = None
    kind: str = "deeplab"


def load_any(path: str | os.PathLike) -> LoadedModel:
    """Recognise the file by suffix and header and load it (one-line ``WeightsError``s naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix == ".tflite":
        from .tflite import load_tflite, tflite_preprocessing

        return LoadedModel(load_tflite(path), tflite_preprocessing(path), kind="tflite")
    if path.suffix == ".onnx":
        from ..export import OnnxRuntimeModel

        runtime = OnnxRuntimeModel(path)
        return LoadedModel(None, runtime.metadata, runtime, kind="onnx")
    if path.suffix != ".safetensors":
        payload = read_file(path)
        if isinstance(payload, dict) and "classifier.4.weight" in payload and "backbone.conv1.weight" in payload:
            from .torchvision import load_torchvision

            model = load_torchvision(payload)
            classes = _voc_classes() if model.classifier[-1].out_channels == 21 else None
            return LoadedModel(model.eval(), {"mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                                              **({"classes": classes} if classes else {})}, kind="torchvision")
    from ..checkpoint import load_model

    try:
        model, metadata = load_model(path)
    except WeightsError as error:
        raise WeightsError(f"{error}; supported: deeplab model files and checkpoints, torchvision DeepLabV3 "
                           "state dicts, .tflite and .onnx") from None
    return LoadedModel(model.eval(), metadata, kind="deeplab")


def _voc_classes() -> list[str]:
    from .tflite import VOC_CLASSES

    return list(VOC_CLASSES)
