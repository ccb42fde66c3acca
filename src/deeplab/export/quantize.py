"""int8: the model exported to ONNX, statically quantized by ONNX Runtime on a few real images.

Post-training quantization with QDQ nodes: per-channel int8 weights, uint8 activations whose ranges come
from running the float model on calibration images (min/max). ONNX Runtime and OpenVINO both run the file
(``runtimes.py``), each with the CPU's int8 dot-product instructions (AVX512-VNNI / AVX-VNNI, AMX-INT8). The
images should look like what will be segmented; a handful (8–16) is enough for the ranges — the tests
state the mIoU it costs on real labels.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.io import IMAGE_SUFFIXES, read_image
from ..data.normalization import Normalization
from ..models.folding import fold_batchnorm
from ..utils.files import atomic_write_bytes
from ..utils.machine import has_vnni
from ..utils.optional import require
from ..weights.card import HEADER_KEY, ModelCard
from .graph import SegmentationGraph, build_graph, card_for

CALIBRATION_LIMIT = 16
CALIBRATION_MAX_SIDE = 1024
INT8_RULES = ("vnni", "overflow-safe")  # 8 bits everywhere (VNNI/AMX CPUs only) / one bit less where it overflows


def calibration_images(source: str | os.PathLike, normalization: Normalization,
                       limit: int = CALIBRATION_LIMIT) -> list[Tensor]:
    """The first ``limit`` images of a folder (sorted), or one image file, as normalised 1×3×H×W tensors at
    their own size (the long side capped at 1024, as large inputs add time, not range information)."""
    from PIL import Image

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise ValueError(f"{source}: no calibration images in this folder ({', '.join(IMAGE_SUFFIXES)})")
    elif source.is_file():
        files = [source]
    else:
        raise FileNotFoundError(f"{source}: no such calibration image or folder")
    tensors = []
    for path in files:
        image = read_image(path)
        scale = CALIBRATION_MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        tensors.append(normalization.to_tensor(image))
    return tensors


def calibration_for(source: str | os.PathLike | None, normalization: Normalization, *,
                    required: bool) -> list[Tensor]:
    """``calibration_images(source)``; no source: nothing, or — when int8 is asked for — a one-line error."""
    if source is None:
        if required:
            raise ValueError("--precision int8 needs --calibration FOLDER: 8–16 images like the ones to segment")
        return []
    return calibration_images(source, normalization)


def check_int8_path(backend: str | None, *, onnx_file: bool) -> None:
    """int8 is the static quantization of a torch model, run by ONNX Runtime or OpenVINO: refuse torch and
    exported files (an exported int8 file runs as it is, without ``--precision``)."""
    if backend not in (None, "onnxruntime", "openvino", "auto") or onnx_file:
        raise ValueError("--precision int8 runs on --backend onnxruntime or openvino, from a torch model file "
                         "(an int8 .onnx runs as it is)")


class _Reader:
    """ONNX Runtime's calibration data reader: our normalised tensors, as the graph's input takes them."""

    def __init__(self, name: str, images: Sequence[Tensor], encode: Callable[[Tensor], Tensor]) -> None:
        self.name, self.images, self.encode = name, iter(images), encode

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.images, None)
        return None if x is None else {self.name: self.encode(x.detach().cpu().float()).numpy()}


def graph_input(x: Tensor, graph: SegmentationGraph) -> Tensor:
    """A normalised float N×3×H×W batch as ``graph`` takes it: itself, or (a graph with pre-processing) the
    uint8 images it was normalised from, in the graph's layout — so one set of calibration tensors serves both."""
    if not graph.preprocess:
        return x
    pixels = ((x * graph.std.cpu() + graph.mean.cpu()) * graph.scale).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous() if graph.layout == "NHWC" else pixels


def float_nodes(path: Path) -> list[str]:
    """The nodes kept in float: everything before the first convolution (a graph's uint8 → normalised input)
    and after the last (upsampling, argmax, softmax), the last convolution itself (the classifier) and every
    resize. Their int8 versions quantize the logits themselves — measured on the authors' model over 40 VOC
    images: −1.49 mIoU against fp32 with the classifier and resizes in int8, −1.09 without; they are a few
    percent of the FLOPs."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    return [n.name for i, n in enumerate(nodes)
            if n.op_type == "Resize" or i < convs[0] or i >= convs[-1]]


def overflow_safe_overrides(path: Path, ranges: Mapping[str, Any]) -> dict[str, list[dict]]:
    """ONNX Runtime quantization overrides that keep every dense convolution's pairs of u8×s8 products inside
    16 bits — what a CPU without VNNI needs: there ONNX Runtime's dense int8 kernel adds pairs of products in
    16 bits, which 8-bit codes saturate (255·127·2 > 32767: a 1×1 convolution of 255s by 127s returns half its
    sum), while its depthwise kernel sums in 32 bits and is exact (tests/test_int8.py probes both). Each dense
    convolution gives up one bit, where it costs less: an input with negative values (``ranges``: the calibrated
    (min, max) of each tensor) has its zero point mid-range, so all its codes are large, and its range is
    doubled (codes 0–128); an input that is never negative (after a ReLU) keeps 8 bits and the weights get 7
    (``reduce_range``). Depthwise convolutions keep 8 bits for both. On the authors' model over 92 VOC photos
    (fp32 71.87 %): all in 8 bits 54.53 %, every weight in 7 bits 68.42 %, depthwise weights in 8 and the rest in
    7 bits 70.04 %, this split 70.35 %; on a CamVid MobileNetV2 (fp32 57.99 %): 54.27, 56.70, 56.53, 57.37 %."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    overrides = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in shapes:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group > 1 and shapes[node.input[1]][1] == 1:  # one input channel per group: depthwise, exact
            continue
        low, high = ranges[node.input[0]].range_value
        if low < 0:
            high = np.maximum(high, 0)
            overrides[node.input[0]] = [{"rmin": low, "rmax": (high + (high - low)).astype(np.float32)}]
        else:
            overrides[node.input[1]] = [{"axis": 0, "reduce_range": True}]
    return overrides


def resolve_int8_rule(rule: str) -> str:
    """``auto``: ``vnni`` on a CPU with int8 dot-product instructions, ``overflow-safe`` on one without."""
    if rule not in ("auto", *INT8_RULES):
        raise ValueError(f"int8 rule must be auto or one of {', '.join(INT8_RULES)}, got {rule!r}")
    return ("vnni" if has_vnni() else "overflow-safe") if rule == "auto" else rule


def write_int8_onnx(model: nn.Module, calibration: Sequence[Tensor], path: str | os.PathLike, *,
                    card: ModelCard | None = None, include_preprocessing: bool = False, output: str | None = None,
                    layout: str = "NCHW", rule: str = "auto") -> Path:
    """``model`` (eval mode, at its current output stride) batch-norm folded, exported (with the pre- and
    post-processing ``export_onnx`` takes) and statically quantized (QDQ) into the ONNX file ``path``, its
    activation ranges calibrated on ``calibration``, the card in its header with ``precision: int8`` and the
    rule used. ``rule``: ``vnni`` keeps 8-bit weights and inputs everywhere — for CPUs with VNNI/AMX, as it
    saturates without; ``overflow-safe`` gives each dense convolution's weights or input one bit
    (``overflow_safe_overrides``) and runs right on every CPU; ``auto`` picks the one for this CPU. Written
    atomically: an existing file is replaced only by a complete one."""
    if not calibration:
        raise ValueError("--precision int8 needs calibration images: --calibration FOLDER (8–16 typical images)")
    rule = resolve_int8_rule(rule)
    require("onnxruntime", "export")
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx import export_onnx

    folded, _ = fold_batchnorm(model)
    card = card_for(model, card)
    graph = build_graph(folded, card, include_preprocessing=include_preprocessing, output=output, layout=layout)
    encode = functools.partial(graph_input, graph=graph)
    input_name = "image" if include_preprocessing else "input"
    with tempfile.TemporaryDirectory() as folder:
        float_path = export_onnx(folded, Path(folder) / "float.onnx", card=card, output=graph.output,
                                 include_preprocessing=include_preprocessing, layout=layout)
        prepared, ranges = Path(folder) / "prepared.onnx", Path(folder) / "ranges.json"
        quantized = Path(folder) / "int8.onnx"
        quant_pre_process(str(float_path), str(prepared))  # shapes inferred and graph cleaned for the quantizer
        settings = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes(prepared))
        if rule == "vnni":
            quantize_static(str(prepared), str(quantized), _Reader(input_name, calibration, encode), **settings)
        else:
            # the overrides depend on the calibrated ranges: a first pass calibrates (its ranges cached), the
            # second reuses them with the overrides
            settings["calibration_cache_path"] = str(ranges)
            quantize_static(str(prepared), str(Path(folder) / "ranges_pass.onnx"),
                            _Reader(input_name, calibration, encode), **settings)
            overrides = overflow_safe_overrides(prepared, load_tensors_data(ranges))
            quantize_static(str(prepared), str(quantized), None, **settings,
                            extra_options={"TensorQuantOverrides": overrides})
        header = json.loads(next(e.value for e in onnx.load(str(float_path)).metadata_props if e.key == HEADER_KEY))
        proto = onnx.load(str(quantized))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = HEADER_KEY, json.dumps({**header, "precision": "int8", "int8_rule": rule,
                                                     "calibration_images": len(calibration)})
    return atomic_write_bytes(path, proto.SerializeToString())


__all__ = ["CALIBRATION_LIMIT", "INT8_RULES", "calibration_for", "calibration_images", "graph_input",
           "overflow_safe_overrides", "resolve_int8_rule", "write_int8_onnx"]
