"""What a model file says about itself: ``ModelCard``, the one typed record of a model's builder config, class
names, palette, ignore index, normalisation, dataset and the code version that wrote it.

Every file the project writes — model files, training checkpoints, exported ONNX/TorchScript graphs — carries
the card as a flat JSON header written by ``ModelCard.header`` and read back by ``ModelCard.from_header``, so a
file can be used (predicted with, evaluated, exported, resumed) with nothing but itself.

The header also holds ``payload_sha256``, a digest of every tensor and value the file stores beside the header
(``payload_digest``): a file whose bytes changed after writing is refused on load instead of silently giving
other predictions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch

from .. import __version__
from ..data.datasets import VOC_CLASSES
from ..data.normalization import IMAGENET, Normalization
from ..utils.plain import plain
from .io import WeightsError

MODEL_FORMAT = "deeplab.model"
FORMAT_VERSION = 2
HEADER_KEY = "deeplab"  # where files keep the JSON header: safetensors / ONNX metadata entry, TorchScript "deeplab.json"
KINDS = ("model", "checkpoint", "export")
Color = tuple[int, int, int]


@dataclass(frozen=True)
class ModelCard:
    """The self-description of a model: everything besides the weights that using it needs.

    ``config`` is the builder config (``deeplab.models.build_model(config)`` rebuilds the network);
    ``classes`` the class names (their number is the model's output channels); ``normalization`` how uint8
    pixels become the model's input; ``palette`` display colours (None: the VOC colour map); ``ignore_index``
    the label value that is not a class; ``dataset`` where it was trained; ``input_size`` the (H, W) a graph
    with a fixed input was made for (the authors' TFLite files), else None.
    """

    config: dict[str, Any]
    classes: tuple[str, ...]
    normalization: Normalization = IMAGENET
    palette: tuple[Color, ...] | None = None
    ignore_index: int | None = 255
    dataset: str | None = None
    input_size: tuple[int, int] | None = None
    code_version: str = field(default=__version__, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", dict(self.config))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.palette is not None:
            object.__setattr__(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        expected = self.config.get("num_classes")
        if expected is not None and expected != len(self.classes):
            raise ValueError(f"the card names {len(self.classes)} classes for a model with {expected} outputs")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def default(cls, config: Mapping[str, Any], *, classes: Sequence[str] | None = None,
                normalization: Normalization = IMAGENET) -> "ModelCard":
        """A card for a model nothing else describes: VOC's class names for 21 outputs, else "0", "1", ...,
        and torchvision's ImageNet normalisation."""
        count = int(config["num_classes"])
        if classes is None:
            classes = VOC_CLASSES if count == len(VOC_CLASSES) else [str(i) for i in range(count)]
        return cls(dict(config), tuple(classes), normalization)

    def for_model(self, config: Mapping[str, Any]) -> "ModelCard":
        """The same card describing another build of the model (e.g. fine-tuned to other classes: names
        beyond the new count are dropped, new ones are numbered)."""
        count = int(config.get("num_classes", self.num_classes))
        classes = list(self.classes[:count]) + [str(i) for i in range(self.num_classes, count)]
        palette = None if self.palette is None else self.palette[:count]
        return replace(self, config=dict(config), classes=tuple(classes), palette=palette)

    def header(self, kind: str, payload_sha256: str | None = None, **extra: Any) -> dict[str, Any]:
        """The JSON header every deeplab file carries (``kind``: model, checkpoint or export); ``extra`` adds
        what only that kind of file has (an exported graph's input/output contract, say)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        header = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                  "code_version": self.code_version, "config": plain(self.config), "classes": list(self.classes),
                  "palette": None if self.palette is None else [list(c) for c in self.palette],
                  "ignore_index": self.ignore_index, "normalization": self.normalization.to_dict(),
                  "dataset": self.dataset, "input_size": None if self.input_size is None else list(self.input_size)}
        if payload_sha256 is not None:
            header["payload_sha256"] = payload_sha256
        return {**header, **extra}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], source: str) -> "ModelCard":
        """Read a header written by ``header``; one-line ``WeightsError``s naming ``source`` otherwise."""
        check_header(header, source)
        try:
            return cls(config=dict(header["config"]), classes=tuple(header["classes"]),
                       normalization=Normalization.from_dict(header["normalization"]),
                       palette=header.get("palette"), ignore_index=header.get("ignore_index"),
                       dataset=header.get("dataset"), input_size=header.get("input_size"),
                       code_version=str(header.get("code_version", "unknown")))
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"{source}: damaged deeplab header ({type(error).__name__}: {error})") from None


def is_deeplab_header(header: Any) -> bool:
    return isinstance(header, Mapping) and header.get("format") == MODEL_FORMAT


def check_header(header: Any, source: str) -> None:
    """Refuse what is not a deeplab header, or one written by a newer deeplab."""
    if not is_deeplab_header(header):
        raise WeightsError(f"{source}: not a deeplab model file (no '{MODEL_FORMAT}' header)")
    version = header.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(f"{source}: written by a newer deeplab (format {version}); upgrade deeplab to read it")
    if version < FORMAT_VERSION:
        raise WeightsError(f"{source}: written by an older deeplab (format {version}, this one reads "
                           f"{FORMAT_VERSION}); convert it with that version or retrain")


def payload_digest(payload: Any) -> str:
    """SHA-256 of a nested payload of tensors, containers and plain values, independent of how it is
    serialised: keys in sorted order, each tensor as dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=str):
            digest.update(f"K{key!s}".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:  # str, int, float, bool, None
        digest.update(f"V{type(value).__name__}:{json.dumps(value)}".encode())
