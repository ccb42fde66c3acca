"""Self-describing model files: ``save_model`` writes weights with everything needed to rebuild and use them
(builder config, class names, normalisation, ignore index, code version); ``load_model`` rebuilds the model
from the file alone.

Two formats, same content: ``.pt``/``.pth`` (a plain dict, readable with ``torch.load(weights_only=True)``)
and ``.safetensors`` (tensors + JSON metadata in the header, for distributing weights).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import __version__
from .fileio import atomic_torch_save, atomic_write_bytes
from .models.builders import build_model
from .models.deeplab import DeepLab
from .weights.io import WeightsError, load_weights, read_file

MODEL_FORMAT = "deeplab.model"
FORMAT_VERSION = 1


def save_model(model: DeepLab, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` atomically with its config and ``metadata`` (e.g. ``classes``, ``mean``, ``std``,
    ``ignore_index``). The suffix picks the format: ``.safetensors`` or torch's zip format."""
    if not model.config:
        raise ValueError("model has no builder config; build it with deeplab.models builders to save it")
    header = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "code_version": __version__,
              "config": model.config, "metadata": dict(metadata or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        return atomic_write_bytes(path, save(state, metadata={"deeplab": json.dumps(header)}))
    return atomic_torch_save({**header, "state_dict": state}, path)


def load_model(path: str | os.PathLike, *, num_classes: int | None = None,
               finetune: bool = False) -> tuple[DeepLab, dict[str, Any]]:
    """Rebuild the model a ``save_model`` file describes and load its weights strictly.

    Returns ``(model, metadata)``. With ``finetune=True`` and a new ``num_classes`` every tensor but the
    class layers is loaded (the classifier starts fresh).
    """
    header, state = _read_model_file(Path(path))
    config = dict(header["config"])
    if num_classes is not None:
        config["num_classes"] = num_classes
    model = build_model(config)
    load_weights(model, state, finetune=finetune, name=str(path))
    return model, dict(header.get("metadata", {}))


def _read_model_file(path: Path) -> tuple[dict[str, Any], dict]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        state = read_file(path)
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("deeplab")
        header = json.loads(raw) if raw else {}
    else:
        obj = read_file(path)
        header = obj if isinstance(obj, dict) else {}
        state = header.get("state_dict")
    if header.get("format") != MODEL_FORMAT or not isinstance(state, dict):
        raise WeightsError(f"{path}: not a deeplab model file (no '{MODEL_FORMAT}' header); for torchvision "
                           "or ImageNet files use deeplab.weights.load_torchvision / load_backbone_weights")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(f"{path}: written by a newer deeplab (format {header['format_version']}); upgrade")
    return header, state

