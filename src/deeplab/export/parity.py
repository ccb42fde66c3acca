"""An exported file against the eager model. ``check_parity``: at sizes other than the trace size — the proof
that a graph traced at one size computes the model at every size; ``label_disagreement``: on real images, for
a file that approximates the model (int8)."""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..inference.backends import load_exported
from ..weights.card import ModelCard
from .graph import SAMPLE_BATCH, SegmentationGraph, build_graph, eval_mode, model_device
from .quantize import graph_input

DEFAULT_PARITY_SIZES = ((97, 129), (65, 65))


def check_parity(model: nn.Module, exported_path: str | os.PathLike,
                 sizes: Sequence[tuple[int, int]] = DEFAULT_PARITY_SIZES, *, batch_size: int = SAMPLE_BATCH,
                 seed: int = 0) -> dict[tuple[int, int], float]:
    """Run the exported file and ``model`` (eager, same pre/post-processing, read from the file) on the same
    random batch at each size; returns ``{(H, W): max abs difference}`` of the outputs. For a labels graph
    the value is the fraction of pixels whose label differs (0.0: identical). Compare on the same device:
    TF32 convolutions on CUDA alone differ from CPU by ~1e-3."""
    run, graph = _exported_and_eager(model, exported_path)
    generator = torch.Generator().manual_seed(seed)
    results: dict[tuple[int, int], float] = {}
    with eval_mode(graph), torch.inference_mode():
        for height, width in sizes:
            x = graph.sample(batch_size, height, width, generator)
            expected, actual = graph(x).cpu(), run(x)
            if expected.shape != actual.shape:
                raise ValueError(f"{exported_path}: output shape {tuple(actual.shape)} at input {tuple(x.shape)}, "
                                 f"eager gives {tuple(expected.shape)}")
            if graph.output == "labels":
                results[(height, width)] = (actual != expected).double().mean().item()
            else:
                results[(height, width)] = (actual.double() - expected.double()).abs().max().item()
    return results


def label_disagreement(model: nn.Module, exported_path: str | os.PathLike, images: Sequence[Tensor]) -> float:
    """The fraction of pixels whose label (argmax of the output) differs between the exported file and the
    eager ``model`` over real ``images`` (normalised 1×3×H×W tensors, fed to the file as its input takes them):
    the check for a file that only approximates the model, such as an int8 one."""
    run, graph = _exported_and_eager(model, exported_path)
    differing = total = 0
    with eval_mode(graph), torch.inference_mode():
        for image in images:
            x = graph_input(image.to(model_device(model)), graph)
            expected, actual = graph(x).cpu(), run(x)
            if graph.output != "labels":
                expected, actual = expected.argmax(dim=1), actual.argmax(dim=1)
            differing += (actual != expected).sum().item()
            total += expected.numel()
    return differing / max(total, 1)


def _exported_and_eager(model: nn.Module, exported_path: str | os.PathLike
                        ) -> tuple[Callable[[Tensor], Tensor], SegmentationGraph]:
    """The exported file as a callable, and ``model`` with the same pre/post-processing (read from the file)."""
    run, header = load_exported(exported_path, model_device(model))
    card = ModelCard.from_header(header, str(exported_path)) if header else ModelCard(config={}, classes=())
    graph = build_graph(model, card, include_preprocessing=header.get("input") == "uint8",
                        output=header.get("output", "logits"), layout=header.get("layout", "NCHW"))
    return run, graph
