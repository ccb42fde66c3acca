"""TorchScript and ``torch.export``.

- ``export_torchscript``: ``torch.jit.trace`` — the model reads sizes with ``x.shape`` and the tracer records
  those as graph ops, so a trace runs at any size (``check_parity`` verifies it at sizes other than the trace
  size). A TorchScript file is a program: load only files you trust. The card is the extra file
  ``deeplab.json``.
- ``export_program``: ``torch.export.export`` with dynamic N, H, W (H, W > output stride), for in-process use
  (``program.module()``, AOTInductor); not offered as a file format because ``torch.export.load`` unpickles with
  ``weights_only=False``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..utils.files import atomic_write
from ..inference.backends import TORCHSCRIPT_EXTRA_FILE
from ..weights.card import ModelCard
from .graph import DEFAULT_SAMPLE_SIZE, SAMPLE_BATCH, build_graph, card_for, eval_mode, quiet_tracing


def export_torchscript(model: nn.Module, path: str | os.PathLike, *, card: ModelCard | None = None,
                       include_preprocessing: bool = False, output: str | None = None, layout: str = "NCHW",
                       sample_size: tuple[int, int] = DEFAULT_SAMPLE_SIZE) -> Path:
    """Write a traced ``model`` (``torch.jit.load`` reads it); any batch and size work, not just the trace's."""
    card = card_for(model, card)
    graph = build_graph(model, card, include_preprocessing=include_preprocessing, output=output, layout=layout)
    with eval_mode(graph), quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(graph, graph.sample(SAMPLE_BATCH, *sample_size), check_trace=False)
    extra = {TORCHSCRIPT_EXTRA_FILE: json.dumps(card.header("export", **graph.description(), exporter="torch.jit.trace"))}

    def write(handle: io.BufferedWriter) -> None:
        with quiet_tracing():
            torch.jit.save(traced, handle, _extra_files=extra)

    return atomic_write(path, write)


def export_program(model: nn.Module, *, card: ModelCard | None = None, include_preprocessing: bool = False,
                   output: str | None = None, layout: str = "NCHW",
                   sample_size: tuple[int, int] = DEFAULT_SAMPLE_SIZE) -> torch.export.ExportedProgram:
    """``torch.export.export`` with dynamic batch, height and width. H and W must exceed the output stride
    (torch.export assumes every feature map is larger than 1×1)."""
    graph = build_graph(model, card_for(model, card), include_preprocessing=include_preprocessing, output=output,
                        layout=layout)
    smallest = int(getattr(model, "output_stride", 32)) + 1
    in_dims, _ = graph.dynamic_dims()
    dims = {axis: torch.export.Dim(name, min=1 if name == "batch" else smallest) for axis, name in in_dims.items()}
    with eval_mode(graph), torch.no_grad():
        return torch.export.export(graph, (graph.sample(SAMPLE_BATCH, *sample_size),), dynamic_shapes=(dims,))


__all__ = ["export_program", "export_torchscript"]
