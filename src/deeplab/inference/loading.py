"""One entry point for every model file a user may point at: ``load_any(path)``.

- ``.tflite``: the authors' TF model-zoo DeepLab (imported into our PyTorch model);
- ``.onnx``: an exported graph, run by ONNX Runtime (a backend callable, no torch model);
- a deeplab model file or training checkpoint (``.pt``/``.pth``/``.safetensors`` with our header);
- a torchvision ``deeplabv3_resnet50/101`` state dict.

Each file is read once. Every result carries a ``ModelCard``: how to normalise inputs, what the classes are;
files that hold none (torchvision's) get torchvision's conventions (ImageNet mean/std, VOC classes for 21
outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..models.deeplab import DeepLab
from ..weights.card import ModelCard, is_deeplab_header
from ..weights.io import WeightsError, read_file
from ..weights.modelfile import model_from_file, read_model_file

KINDS = ("deeplab", "checkpoint", "torchvision", "tflite", "onnx")
SUPPORTED = "deeplab model files and checkpoints, torchvision DeepLabV3 state dicts, .tflite and .onnx"


@dataclass
class LoadedModel:
    """A model file, ready to run: the torch ``model`` (None for an ONNX graph, which runs as ``backend``),
    its ``card``, and what ``kind`` of file it was."""

    model: DeepLab | None
    card: ModelCard
    kind: str
    backend: Callable | None = None


def load_any(path: str | os.PathLike) -> LoadedModel:
    """Recognise the file by suffix and header and load it (one-line ``WeightsError``s naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix == ".tflite":
        from ..weights.tflite import import_tflite_file

        model, card = import_tflite_file(path)
        return LoadedModel(model.eval(), card, "tflite")
    if path.suffix == ".onnx":
        from .backends import OnnxRuntimeModel

        runtime = OnnxRuntimeModel(path)
        return LoadedModel(None, runtime.card, "onnx", backend=runtime)
    payload = read_file(path)
    if path.suffix != ".safetensors" and not is_deeplab_header(payload):
        from ..weights.torchvision import is_torchvision_deeplabv3, load_torchvision

        if is_torchvision_deeplabv3(payload):
            model = load_torchvision(payload, name=str(path))
            return LoadedModel(model.eval(), ModelCard.default(model.config), "torchvision")
    try:
        file = read_model_file(path, payload)
    except WeightsError as error:
        raise WeightsError(f"{error}; supported: {SUPPORTED}") from None
    model, card = model_from_file(file)
    return LoadedModel(model.eval(), card, "checkpoint" if file.training is not None else "deeplab")
