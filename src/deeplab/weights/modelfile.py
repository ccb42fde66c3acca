"""Self-describing model files: ``save_model`` writes weights with their ``ModelCard`` (builder config, class
names, normalisation, ...); ``load_model`` rebuilds the model from the file alone.

Two formats, same content: ``.pt``/``.pth`` (a plain dict, readable with ``torch.load(weights_only=True)``) and
``.safetensors`` (tensors + the JSON header in its metadata, for distributing weights). Training checkpoints
are ``.pt`` model files with an extra ``training`` entry (``write_model_file(..., training=...)``), so every
checkpoint also predicts. Every file carries a digest of its payload, checked on load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..models.registry import build_model
from ..models.deeplab import DeepLab
from ..utils.files import atomic_torch_save, atomic_write_bytes
from .card import HEADER_KEY, ModelCard, check_header, is_deeplab_header, payload_digest
from .io import WeightsError, load_weights, read_file



@dataclass
class ModelFile:
    """A deeplab file as read from disk: its header, weights and (checkpoints only) training state."""

    header: dict[str, Any]
    state_dict: dict[str, Tensor]
    training: dict[str, Any] | None
    path: Path

    @property
    def card(self) -> ModelCard:
        return ModelCard.from_header(self.header, str(self.path))


def save_model(model: DeepLab, path: str | os.PathLike, card: ModelCard | None = None) -> Path:
    """Write ``model`` with its card atomically; the suffix picks the format (``.safetensors`` or torch's).
    Without a card the default one is written (numbered or VOC class names, ImageNet normalisation)."""
    if card is None and getattr(model, "config", None):
        card = ModelCard.default(model.config)
    return write_model_file(path, model, card)


def write_model_file(path: str | os.PathLike, model: DeepLab, card: ModelCard, *,
                     training: dict[str, Any] | None = None) -> Path:
    """The one writer of model files and checkpoints (``training`` given: a checkpoint, ``.pt`` only)."""
    if not getattr(model, "config", None):
        raise ValueError("model has no builder config; build it with deeplab.models builders to save it")
    if dict(card.config) != dict(model.config):
        raise ValueError("the card describes another model config than the model's; use card.for_model(model.config)")
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {"state_dict": state} if training is None else {"state_dict": state, "training": training}
    header = card.header("checkpoint" if training is not None else "model", payload_digest(payload))
    if path.suffix == ".safetensors":
        if training is not None:
            raise ValueError(f"{path}: training checkpoints are .pt files (safetensors holds tensors only)")
        from safetensors.torch import save

        return atomic_write_bytes(path, save(state, metadata={HEADER_KEY: json.dumps(header)}))
    return atomic_torch_save({**header, **payload}, path)


def read_model_file(path: str | os.PathLike, payload: Any = None) -> ModelFile:
    """Read (or take the already read ``payload`` of) a deeplab file and verify its digest; one-line
    ``WeightsError``s for anything else."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = read_file(path) if payload is None else payload
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(HEADER_KEY)
        try:
            header = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            raise WeightsError(f"{path}: damaged deeplab header in the safetensors metadata") from None
        training = None
    else:
        obj = read_file(path) if payload is None else payload
        header = {k: v for k, v in obj.items() if k not in ("state_dict", "training")} if isinstance(obj, dict) else {}
        state = obj.get("state_dict") if isinstance(obj, dict) else None
        training = obj.get("training") if isinstance(obj, dict) else None
    check_header(header, str(path))
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: deeplab header but no state dict")
    stored = header.get("payload_sha256")
    body: dict[str, Any] = {"state_dict": state} if training is None else {"state_dict": state, "training": training}
    if stored != payload_digest(body):
        raise WeightsError(f"{path}: the weights do not match the checksum in the file's header (the file was "
                           "changed or damaged after it was written); use another copy")
    return ModelFile(header, state, training, path)


def model_from_file(file: ModelFile, *, num_classes: int | None = None,
                    finetune: bool = False) -> tuple[DeepLab, ModelCard]:
    """Rebuild the model a ``ModelFile`` describes and load its weights strictly (see ``load_model``)."""
    card = file.card
    config = dict(card.config)
    if num_classes is not None:
        config["num_classes"] = num_classes
    model = build_model(config)
    load_weights(model, file.state_dict, finetune=finetune, name=str(file.path))
    return model, card.for_model(model.config)


def load_model(path: str | os.PathLike, *, num_classes: int | None = None,
               finetune: bool = False) -> tuple[DeepLab, ModelCard]:
    """Rebuild the model a ``save_model`` file (or a checkpoint) describes and load its weights strictly.

    Returns ``(model, card)``. With ``finetune=True`` and a new ``num_classes`` every tensor but the class
    layers is loaded (the classifier starts fresh).
    """
    return model_from_file(read_model_file(path), num_classes=num_classes, finetune=finetune)


__all__ = ["ModelFile", "is_deeplab_header", "load_model", "model_from_file", "read_model_file", "save_model",
           "write_model_file"]
