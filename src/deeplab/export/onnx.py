"""ONNX export: dynamic batch, height and width; the TorchScript-based exporter (opset 17) by default, the
``torch.export``-based one with ``exporter="dynamo"`` (opset ≥ 18); checked with ``onnx.checker``; the model's
card stored as the ``deeplab`` metadata entry; written atomically.

    python -m deeplab export --weights model.safetensors --format onnx --output model.onnx --include-preprocessing
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..utils.files import atomic_write_bytes
from ..utils.optional import require
from ..weights.card import HEADER_KEY, ModelCard
from .graph import DEFAULT_SAMPLE_SIZE, SAMPLE_BATCH, build_graph, card_for, eval_mode, quiet_tracing

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17
DYNAMO_MIN_OPSET = 18  # the torch.export-based exporter emits opset 18 and cannot convert every op down


def export_onnx(model: nn.Module, path: str | os.PathLike, *, card: ModelCard | None = None,
                opset: int = DEFAULT_OPSET, dynamic: bool = True, include_preprocessing: bool = False,
                output: str | None = None, layout: str = "NCHW", sample_size: tuple[int, int] = DEFAULT_SAMPLE_SIZE,
                exporter: str = "torchscript") -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width (``dynamic=False``: fixed at
    1×``sample_size``). Input ``image`` (uint8, with ``include_preprocessing``, normalised by the card's
    normalisation) or ``input`` (normalised float); output named after ``output``."""
    onnx = require("onnx", "export")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ValueError(f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later, got opset {opset}")
    card = card_for(model, card)
    graph = build_graph(model, card, include_preprocessing=include_preprocessing, output=output, layout=layout)
    sample = graph.sample(SAMPLE_BATCH if dynamic else 1, *sample_size)
    in_dims, out_dims = graph.dynamic_dims()
    names = (["image" if include_preprocessing else "input"], [graph.output])
    with eval_mode(graph), quiet_tracing(), torch.no_grad():
        if exporter == "dynamo":
            require("onnxscript", "export")
            dims = {axis: torch.export.Dim.DYNAMIC for axis in in_dims} if dynamic else None
            program = torch.onnx.export(graph, (sample,), dynamo=True, opset_version=opset, verbose=False,
                                        input_names=names[0], output_names=names[1],
                                        dynamic_shapes=(dims,) if dims else None)
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            axes = {names[0][0]: in_dims, names[1][0]: out_dims} if dynamic else None
            torch.onnx.export(graph, (sample,), buffer, dynamo=False, opset_version=opset, input_names=names[0],
                              output_names=names[1], dynamic_axes=axes, do_constant_folding=True)
            proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    entry = proto.metadata_props.add()
    entry.key = HEADER_KEY
    entry.value = json.dumps(card.header("export", **graph.description(), exporter=exporter, opset=opset))
    return atomic_write_bytes(path, proto.SerializeToString())


__all__ = ["DEFAULT_OPSET", "DYNAMO_MIN_OPSET", "EXPORTERS", "export_onnx"]
