"""Find the DeepLabV3 mobile ASPP head in a parsed TFLite graph by following the dataflow, not positions.

The converter runs the image-pooling conv before the 1×1 branch and concatenates ``[pooling, 1×1]``, so
the branches are found from the CONCATENATION backwards (:func:`_find_head`); the global pooling and the
final upsampling of the logits are checked on the way (:func:`_check_pool`, :func:`_final_resize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import WeightsError
from .tflite_graph import POOL_OPS, RESIZE_OPS, TFLiteGraph, TFLiteOp, _error


@dataclass
class _Head:
    """The ASPP head as found in the graph."""

    branches: list[TFLiteOp]  # concat order
    pooling: TFLiteOp | None  # the branch conv that reads the pooled map
    pool: TFLiteOp | None
    features: str  # backbone output tensor
    project: TFLiteOp
    logits: TFLiteOp
    resizes: list[TFLiteOp]  # the resize ops the head accounts for (pooling broadcast, final upsampling)
    align_corners: bool


def _only_consumer(graph: TFLiteGraph, op: TFLiteOp, types: tuple[str, ...]) -> TFLiteOp:
    users = graph.consumers(op.outputs[0])
    if len(users) != 1 or users[0].type not in types:
        found = ", ".join(u.describe() for u in users) or "nothing"
        raise _error(graph, op, op.outputs[0], f"expected one {'/'.join(types)} to read it, found {found}")
    return users[0]


def _find_head(graph: TFLiteGraph) -> _Head:
    concats = [op for op in graph.ops if op.type == "CONCATENATION"]
    if len(concats) != 1:
        raise WeightsError(f"{graph.path}: expected one CONCATENATION (the ASPP), found {len(concats)}; "
                           "this importer supports the DeepLabV3 mobile ASPP head")
    concat = concats[0]
    if concat.options.get("axis") not in (3, -1) or concat.options.get("activation") != "NONE":
        raise _error(graph, concat, concat.outputs[0], f"unexpected options {concat.options}")
    resizes, branches, pooling, pool = [], [], None, None
    for tensor in concat.inputs:
        op, branch_resizes = graph.producer(tensor), []
        while op is not None and op.type in RESIZE_OPS:
            branch_resizes.append(op)
            op = graph.producer(op.inputs[0])
        if op is None or op.type != "CONV_2D":
            raise WeightsError(f"{graph.path}: ASPP branch {tensor!r} is not produced by a CONV_2D "
                               f"({op.describe() if op else 'graph input'})")
        source = graph.producer(op.inputs[0])
        if source is not None and source.type in POOL_OPS:
            pooling, pool = op, source
        for resize in branch_resizes:  # resizing a 1x1 map is a broadcast whatever its flags: our expand
            if op is not pooling or graph.shapes[resize.inputs[0]][1:3] != (1, 1):
                raise _error(graph, resize, resize.outputs[0], "ASPP branch resize that is not a broadcast")
        resizes += branch_resizes
        branches.append(op)
    project = _only_consumer(graph, concat, ("CONV_2D",))
    logits = _only_consumer(graph, project, ("CONV_2D",))
    plain = [b for b in branches if b is not pooling]
    if len(plain) != 1 or graph.shapes[plain[0].inputs[1]][1:3] != (1, 1):
        raise WeightsError(f"{graph.path}: ASPP has branches {[b.describe(b.inputs[1]) for b in branches]}; "
                           "only the mobile ASPP (one 1x1 branch + image pooling) is supported")
    features = plain[0].inputs[0]
    if pool is not None:
        _check_pool(graph, pool, features)
    tail, align_corners = _final_resize(graph, logits)
    return _Head(branches, pooling, pool, features, project, logits, resizes + tail, align_corners)


def _check_pool(graph: TFLiteGraph, pool: TFLiteOp, features: str) -> None:
    """Image pooling must be a global average of the backbone output (our AdaptiveAvgPool2d(1))."""
    height, width = graph.shapes[features][1:3]
    if pool.inputs[0] != features:
        raise _error(graph, pool, pool.inputs[0], f"pools another tensor than the 1x1 branch ({features!r})")
    if pool.type == "AVERAGE_POOL_2D":
        ok = pool.options.get("filter") == (height, width) and graph.shapes[pool.outputs[0]][1:3] == (1, 1)
    else:
        axes = graph.constants.get(pool.inputs[1], np.array([])).ravel().tolist()
        ok = sorted(axes) == [1, 2] and pool.options.get("keep_dims", False)
    if not ok:
        raise _error(graph, pool, pool.outputs[0], f"not a global average pool of the {height}x{width} features")


def _final_resize(graph: TFLiteGraph, logits: TFLiteOp) -> tuple[list[TFLiteOp], bool]:
    """The resize chain from the logits to the graph output: same-size resizes are identities (the
    converter leaves one); exactly one real upsampling to the input size gives our ``align_corners``."""
    chain, op, align_corners = [], logits, None
    while op.outputs[0] not in graph.outputs:
        op = _only_consumer(graph, op, ("RESIZE_BILINEAR",))
        chain.append(op)
        same_size = graph.shapes[op.inputs[0]][1:3] == graph.shapes[op.outputs[0]][1:3]
        if same_size and (op.options["align_corners"] or op.options["half_pixel_centers"]):
            continue  # an exact identity in both conventions
        if align_corners is not None:
            raise _error(graph, op, op.outputs[0], "a second upsampling of the logits")
        if op.options["align_corners"]:
            align_corners = True
        elif op.options["half_pixel_centers"]:
            align_corners = False  # PyTorch's align_corners=False is TF's half-pixel convention
        else:
            raise _error(graph, op, op.outputs[0], "legacy TF resize (no align_corners, no half-pixel centers) "
                                                   "has no PyTorch equivalent")
    if align_corners is None or graph.shapes[op.outputs[0]][1:3] != graph.shapes[graph.inputs[0]][1:3]:
        raise _error(graph, op, op.outputs[0], "logits are not upsampled to the input size as our model does")
    return chain, align_corners
