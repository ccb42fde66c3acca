"""Inference backends: callables from a normalised float N×3×H×W tensor to logits that the ``Predictor`` can run
instead of the torch model's forward, and the readers of exported graphs.

- ``OnnxRuntimeModel``: an exported ONNX file run by ONNX Runtime (``pip install 'deeplab[export]'``).
- ``load_exported``: an exported file (``.onnx`` or TorchScript) as ``(tensor → tensor, header)``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..utils.machine import has_vnni
from ..utils.optional import require
from ..weights.card import HEADER_KEY, ModelCard

TORCHSCRIPT_EXTRA_FILE = f"{HEADER_KEY}.json"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def warn_if_saturating(header: Mapping[str, Any], source: str) -> None:
    """A file quantized with the ``vnni`` rule, run on a CPU without VNNI, saturates in its dense convolutions
    (the authors' model: 54.5 % instead of 71.9 % mIoU on VOC photos): say so once, with the fix."""
    if header.get("int8_rule") == "vnni" and not has_vnni():
        warnings.warn(f"{source}: quantized for CPUs with VNNI/AMX; this CPU has none, so its int8 convolutions "
                      "saturate and labels degrade — re-export it with --int8-rule overflow-safe", stacklevel=2)


class OnnxRuntimeModel:
    """An exported ONNX file run by onnxruntime (CPU by default).

    ``model(x)`` takes a normalised float N×3×H×W tensor (any device) and returns float32 logits N×C×H×W on
    the same device — a drop-in for the torch model in ``Predictor(backend=...)``; that needs a file
    exported without preprocessing and with logits output. ``run(array)`` runs any exported graph on numpy.
    """

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None) -> None:
        ort = require("onnxruntime", "export")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ValueError(f"{self.path}: not a loadable ONNX model ({_first_line(error)})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(HEADER_KEY)
        self.header: dict[str, Any] = json.loads(raw) if raw else {}
        warn_if_saturating(self.header, str(self.path))
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type
        self.output_name = self.session.get_outputs()[0].name

    @property
    def card(self) -> ModelCard:
        """The card the file was exported with (classes, normalisation, ...)."""
        return ModelCard.from_header(self.header, str(self.path))

    def run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(array)})[0]

    def check_logits_graph(self) -> None:
        """A model backend takes a normalised float batch and returns logits: say how to export one if not."""
        if self.input_type != "tensor(float)" or self.header.get("output", "logits") != "logits":
            raise ValueError(f"{self.path}: takes {self.input_type} and returns {self.header.get('output')}; as a "
                             "model backend export it without --include-preprocessing and with logits output")

    def __call__(self, x: Tensor) -> Tensor:
        self.check_logits_graph()
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run(array)).to(x.device)


def load_exported(path: str | os.PathLike, device: torch.device | str = "cpu"
                  ) -> tuple[Callable[[Tensor], Tensor], dict[str, Any]]:
    """An exported file (``.onnx``: onnxruntime; otherwise TorchScript) as ``(tensor → tensor, header)``."""
    path = Path(path)
    if path.suffix == ".onnx":
        session = OnnxRuntimeModel(path)
        return lambda x: torch.from_numpy(session.run(x.cpu().numpy())), session.header
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such TorchScript file")
    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript; loading a file we exported is intended
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as error:  # torch raises RuntimeError or zip errors for non-TorchScript files
        raise ValueError(f"{path}: not a TorchScript file ({_first_line(error)})") from None
    raw = extra[TORCHSCRIPT_EXTRA_FILE]
    return (lambda x: module(x.to(device)).cpu()), json.loads(raw) if raw else {}
