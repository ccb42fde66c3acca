"""Import the authors' DeepLabV3 TFLite graph (``deeplabv3_257_mv_gpu.tflite``) into our ``DeepLab``.

That file is the model zoo's ``mobilenetv2_dm05_coco_voc_trainaug``: MobileNetV2 ×0.5 at output stride 8,
the mobile ASPP (a 1×1 branch + image pooling), 21 VOC classes, batch norm folded into conv biases. Its
graph (55 convs, 10 ADD, 1 AVERAGE_POOL_2D, 1 CONCATENATION, 3 RESIZE_BILINEAR) maps onto
``deeplabv3(backbone="mobilenet_v2", width_mult=0.5, output_stride=8, aspp_rates=(), align_corners=True)``.

Pairing is *structural*, not purely positional: the converter runs the image-pooling conv before the 1×1
branch and concatenates ``[pooling, 1×1]`` — the opposite of our ``convs.0`` (1×1), ``convs.1`` (pooling).
Both convs are 160→256, so a positional pairing would pass every shape check and still be wrong. So the
ASPP branches are found by following the dataflow back from the CONCATENATION, and the projection's
input channels are permuted to our concat order; backbone convs pair in execution order. Every pair is
checked (shape, stride, dilation, padding, groups, fused activation), as are the residual ADDs, the
global pooling and the final resize; anything else in the graph raises ``WeightsError``.

Folded BN: our convs before a BN have no bias, so each such BN becomes identity-plus-bias (weight 1,
running mean 0, running variance 1 − eps so that √(var + eps) = 1, bias = the TF conv bias). The model
therefore computes exactly the TF function in eval mode; fine-tuning it with BN in train mode would not
(batch statistics replace the folded ones), so freeze BN (``model.eval()`` on BN layers) to fine-tune.

The graph carries no metadata ("TOCO Converted."): inputs are normalised x/127.5 − 1 (``SIGNED_UNIT``: mean
0.5 / std 0.5 on [0, 1] images) and the class names are VOC's — ``tflite_card()`` says both, plus the graph's
input size, in the model's ``ModelCard``.

Channel counts: TF DeepLab builds MobileNetV2 with ``divisible_by=1`` when the depth multiplier is not 1,
so ×0.5 has a 12-channel stage where torchvision's rounding (ours) gives 16 — see ``_build``.

Parsing the flatbuffer is in ``tflite_graph.py`` (it uses the pure-Python ``tflite`` package,
``pip install 'deeplab[tflite]'``, imported lazily); finding the ASPP head in the graph is in
``tflite_head.py``. This module maps the graph onto our model and holds the public entry points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..data.datasets import VOC_CLASSES
from ..data.normalization import SIGNED_UNIT
from ..models.aspp import ASPPPooling
from ..models.backbones.base import VALID_OUTPUT_STRIDES
from ..models.backbones import mobilenet
from ..models.backbones.mobilenet import InvertedResidual
from ..models.builders import deeplabv3
from ..models.deeplab import DeepLab
from .card import ModelCard
from .io import WeightsError
from .tflite_graph import CONV_OPS, TFLiteGraph, TFLiteOp, _error, read_tflite_tensors
from .tflite_head import _find_head, _Head

# MobileNetV2 depth multipliers of the TF model zoo; the one whose layer shapes match the graph is used.
WIDTH_CANDIDATES = (0.5, 0.35, 0.75, 1.0, 1.3, 1.4)


# ---------------------------------------------------------------------------------------------- mapping


@dataclass
class _Slot:
    """One of our convs with the BN after it (None for the classifier) and the activation after that."""

    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    activation: str


def _conv_slots(module: nn.Module, prefix: str) -> list[_Slot]:
    """Every conv under ``module`` in registration (= forward) order; its BN and activation are the
    siblings that follow it (our Sequentials are conv, BN, activation)."""
    slots = []
    children = list(module.named_children())
    for k, (name, child) in enumerate(children):
        path = f"{prefix}.{name}" if prefix else name
        if not isinstance(child, nn.Conv2d):
            slots += _conv_slots(child, path)
            continue
        following = [c for _, c in children[k + 1:k + 3]]
        bn = following.pop(0) if following and isinstance(following[0], nn.BatchNorm2d) else None
        after = following[0] if following else None
        activation = "RELU6" if isinstance(after, nn.ReLU6) else "RELU" if isinstance(after, nn.ReLU) else "NONE"
        slots.append(_Slot(path, child, bn, activation))
    return slots


def _tf_to_torch(op: TFLiteOp, weight: np.ndarray) -> Tensor:
    """OHWI → OIHW for CONV_2D; depthwise [1, kh, kw, C] → [C, 1, kh, kw]."""
    order = (0, 3, 1, 2) if op.type == "CONV_2D" else (3, 0, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(weight.transpose(order))).float()


def _assign(graph: TFLiteGraph, op: TFLiteOp, slot: _Slot, in_order: list[slice] | None = None) -> None:
    """Copy one TF conv into ``slot`` after checking everything the op says about the layer."""
    if op.type not in CONV_OPS:
        raise _error(graph, op, op.outputs[0], f"expected a conv for {slot.name}")
    weight_name, bias_name = op.inputs[1], (op.inputs[2] if len(op.inputs) > 2 else "")
    if weight_name not in graph.constants:
        raise _error(graph, op, weight_name, "weights are not a constant tensor")
    weight = _tf_to_torch(op, graph.constants[weight_name])
    if in_order is not None:  # projection: TF concat order → ours
        weight = torch.cat([weight[:, part] for part in in_order], dim=1)
    conv, opts = slot.conv, op.options
    problems = []
    if weight.shape != conv.weight.shape:
        problems.append(f"shape {list(graph.shapes[weight_name])} (as OIHW {list(weight.shape)}) "
                        f"!= {slot.name}.weight {list(conv.weight.shape)}")
    else:
        groups = conv.in_channels if op.type == "DEPTHWISE_CONV_2D" else 1
        if conv.groups != groups or opts.get("depth_multiplier", 1) != 1:
            problems.append(f"groups {groups} (depth multiplier {opts.get('depth_multiplier', 1)}) "
                            f"!= {slot.name} groups {conv.groups}")
        if opts["stride"] != conv.stride or opts["dilation"] != conv.dilation:
            problems.append(f"stride {opts['stride']} dilation {opts['dilation']} != {slot.name} "
                            f"stride {conv.stride} dilation {conv.dilation}")
        # SAME equals our symmetric padding here: every strided input is odd-sized at 257 = 8·32 + 1.
        if conv.kernel_size != (1, 1) and opts["padding"] != "SAME":
            problems.append(f"padding {opts['padding']} (ours is SAME-like)")
        if opts["activation"] != slot.activation:
            problems.append(f"fused activation {opts['activation']} != {slot.activation} after {slot.name}")
    bias = torch.zeros(conv.out_channels)
    if bias_name:
        if bias_name not in graph.constants or graph.constants[bias_name].shape != (conv.out_channels,):
            problems.append(f"bias {bias_name!r} is not a constant of shape [{conv.out_channels}]")
        else:
            bias = torch.from_numpy(graph.constants[bias_name].astype(np.float32))
    if problems:
        raise _error(graph, op, weight_name, "; ".join(problems))
    with torch.no_grad():
        conv.weight.copy_(weight)
        if slot.bn is None:
            conv.bias.copy_(bias)
        else:  # folded BN: identity scale, the TF bias as shift
            slot.bn.weight.fill_(1.0)
            slot.bn.running_mean.zero_()
            slot.bn.running_var.fill_(1.0 - slot.bn.eps)
            slot.bn.bias.copy_(bias)


def import_tflite(graph: TFLiteGraph) -> tuple[DeepLab, list[tuple[int, str]]]:
    """Build our model for ``graph`` and load it; also return ``[(op index, our conv module name)]``."""
    _check_io(graph)
    head = _find_head(graph)
    head_ids = {id(op) for op in (*head.branches, head.project, head.logits)}
    body_ops = [op for op in graph.ops if op.type in CONV_OPS and id(op) not in head_ids]
    model = _build_matching(graph, head, body_ops).eval()
    pairs = _backbone_pairs(graph, model, body_ops) + _head_pairs(graph, model, head)
    in_order = _projection_order(graph, model, head)
    for op, slot in pairs:
        _assign(graph, op, slot, in_order if op is head.project else None)
    all_convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if len(pairs) != len(all_convs) or len({id(s.conv) for _, s in pairs}) != len(all_convs):
        raise WeightsError(f"{graph.path}: mapped {len(pairs)} convs, model has {len(all_convs)}")
    _check_rest(graph, model, pairs, head)
    return model, [(op.index, slot.name) for op, slot in pairs]


def _check_io(graph: TFLiteGraph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise WeightsError(f"{graph.path}: expected one input and one output, got {graph.inputs} → {graph.outputs}")
    input_shape = graph.shapes[graph.inputs[0]]
    if len(input_shape) != 4 or input_shape[3] != 3:
        raise WeightsError(f"{graph.path}: input {graph.inputs[0]!r} has shape {list(input_shape)}, "
                           "expected NHWC RGB")


def _build_matching(graph: TFLiteGraph, head: _Head, body_ops: list[TFLiteOp]) -> DeepLab:
    """Our model with the graph's output stride, head and — since the depth multiplier is not stored — the
    model-zoo width whose backbone shapes match the graph's."""
    strided = sum(op.options["stride"] != (1, 1) for op in body_ops)
    output_stride = 2 ** strided
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise WeightsError(f"{graph.path}: backbone has {strided} strided convs (output stride {output_stride})")
    config = dict(backbone="mobilenet_v2", num_classes=graph.shapes[head.logits.inputs[1]][0],
                  output_stride=output_stride, aspp_rates=(), aspp_channels=graph.shapes[head.project.inputs[1]][0],
                  image_pooling=head.pooling is not None, align_corners=head.align_corners)
    body_shapes = [tuple(_tf_to_torch(op, graph.constants[op.inputs[1]]).shape) for op in body_ops
                   if op.inputs[1] in graph.constants]
    for width in WIDTH_CANDIDATES:
        candidate = _build(width, config)
        if body_shapes == [tuple(s.conv.weight.shape) for s in _conv_slots(candidate.backbone, "")]:
            return candidate
    return _build(_stem_width(graph, body_ops), config)  # so that the per-op checks name the mismatch


def _backbone_pairs(graph: TFLiteGraph, model: DeepLab, body_ops: list[TFLiteOp]) -> list[tuple[TFLiteOp, _Slot]]:
    """Backbone convs pair in execution order."""
    body_slots = _conv_slots(model.backbone, "backbone")
    if len(body_ops) != len(body_slots):
        extra = body_ops[len(body_slots)] if len(body_ops) > len(body_slots) else None
        raise WeightsError(f"{graph.path}: graph has {len(body_ops)} backbone convs, our MobileNetV2 has "
                           f"{len(body_slots)}" + (f"; first unmapped: {extra.describe(extra.inputs[1])}" if extra
                                                   else f"; first unmatched: {body_slots[len(body_ops)].name}"))
    return list(zip(body_ops, body_slots))


def _branch_index(model: DeepLab, head: _Head) -> dict[int, int]:
    """{id(TF branch conv): index of our ASPP branch}: ``convs.0`` is the 1×1 branch, then image pooling."""
    aspp = model.classifier.aspp
    branch_of = {id(op): 0 for op in head.branches if op is not head.pooling}
    if head.pooling is not None:
        branch_of[id(head.pooling)] = next(i for i, b in enumerate(aspp.convs) if isinstance(b, ASPPPooling))
    return branch_of


def _head_pairs(graph: TFLiteGraph, model: DeepLab, head: _Head) -> list[tuple[TFLiteOp, _Slot]]:
    aspp = model.classifier.aspp
    branch_of = _branch_index(model, head)
    pairs = [(op, _conv_slots(aspp.convs[branch_of[id(op)]], f"classifier.0.convs.{branch_of[id(op)]}")[0])
             for op in sorted(head.branches, key=lambda op: branch_of[id(op)])]
    return pairs + [(head.project, _conv_slots(aspp.project, "classifier.0.project")[0]),
                    (head.logits, _conv_slots(model.classifier, "classifier")[-1])]


def _projection_order(graph: TFLiteGraph, model: DeepLab, head: _Head) -> list[slice]:
    """The projection reads our concat order; its input-channel blocks come from where TF put each branch."""
    branch_of = _branch_index(model, head)
    offsets, start = {}, 0
    for op in head.branches:
        channels = graph.shapes[op.outputs[0]][3]
        offsets[id(op)], start = slice(start, start + channels), start + channels
    return [offsets[id(op)] for op in sorted(head.branches, key=lambda op: branch_of[id(op)])]


def _build(width: float, config: dict[str, Any]) -> DeepLab:
    """``deeplabv3(width_mult=width, **config)`` with TF DeepLab's channel rounding: ``divisible_by=8 if
    depth_multiplier == 1.0 else 1`` (``core/feature_extractor.py``), e.g. 12 channels at ×0.5 where
    torchvision's rule gives 16."""
    divisor = mobilenet.CHANNEL_DIVISOR if width == 1.0 else 1
    return deeplabv3(width_mult=width, channel_divisor=divisor, **config)


def _stem_width(graph: TFLiteGraph, body_ops: list[TFLiteOp]) -> float:
    """Fallback width (no candidate matched): from the stem, so the per-op checks name the mismatch."""
    if not body_ops:
        raise WeightsError(f"{graph.path}: no backbone convs found")
    return graph.shapes[body_ops[0].inputs[1]][0] / 32


def _check_rest(graph: TFLiteGraph, model: DeepLab, pairs: list[tuple[TFLiteOp, _Slot]], head: _Head) -> None:
    """Every non-conv op must be accounted for: residual ADDs exactly where our blocks add, the pool, the
    concat and the resizes the head analysis found."""
    residual_projects = {id(block.conv[-2]) for block in model.backbone.features
                         if isinstance(block, InvertedResidual) and block.use_res_connect}
    slot_of_output = {op.outputs[0]: slot for op, slot in pairs}
    known = {id(op) for op in (*head.resizes, head.pool) if op is not None}
    adds = 0
    for op in graph.ops:
        if op.type in CONV_OPS or op.type == "CONCATENATION" or id(op) in known:
            continue
        if op.type == "ADD":
            slots = [slot_of_output.get(t) for t in op.inputs]
            if op.options.get("activation") != "NONE" or not any(s and id(s.conv) in residual_projects
                                                                 for s in slots):
                raise _error(graph, op, op.outputs[0], "ADD that is not one of our residual connections")
            adds += 1
            continue
        raise _error(graph, op, op.outputs[0], "no counterpart in our DeepLabV3 model")
    if adds != len(residual_projects):
        raise WeightsError(f"{graph.path}: graph has {adds} residual ADDs, our backbone {len(residual_projects)}")


def import_tflite_file(path: str | os.PathLike) -> tuple[DeepLab, ModelCard]:
    """Our ``DeepLab`` (eval mode) with the weights of a TF DeepLab ``.tflite`` file, and its card: VOC class
    names (for 21 outputs), x/127.5 − 1 normalisation, VOC's ignore value 255, the graph's fixed input size.
    The flatbuffer is parsed once."""
    graph = read_tflite_tensors(path)
    model = import_tflite(graph)[0]
    return model, tflite_card(graph, model)


def load_tflite(path: str | os.PathLike) -> DeepLab:
    """The imported model alone (see ``import_tflite_file``); outputs are logits at input size."""
    return import_tflite_file(path)[0]


def tflite_card(graph: TFLiteGraph, model: DeepLab) -> ModelCard:
    """What the graph does not store but using it needs (the converter keeps no metadata)."""
    classes = VOC_CLASSES if model.config["num_classes"] == len(VOC_CLASSES) else None
    card = ModelCard.default(model.config, classes=classes, normalization=SIGNED_UNIT)
    return replace(card, dataset="voc" if classes else None, input_size=graph.shapes[graph.inputs[0]][1:3])


def tflite_input(image: Image.Image | np.ndarray, size: tuple[int, int] | None = None) -> Tensor:
    """An RGB image (PIL or HxWx3 uint8) → a 1x3xHxW float tensor x/127.5 − 1, first resized bilinearly
    (PIL) to ``size`` = (H, W) when given, e.g. to the graph's 257×257."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if size is not None:
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
