"""Read a ``.tflite`` flatbuffer into a plain graph: :class:`TFLiteOp` (ops in execution order with their
builtin options as names), :class:`TFLiteGraph` (constants as numpy arrays, every tensor's shape and type)
and :func:`read_tflite_tensors`.

Constant tensors are decoded to numpy: quantized ones dequantized, fp16 widened, DEQUANTIZE ops of constants
folded away, so weights are always float32. Damaged or unsupported files raise ``WeightsError``.

Parsing uses the pure-Python ``tflite`` package (``pip install 'deeplab[tflite]'``), imported lazily.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import WeightsError

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
RESIZE_OPS = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
POOL_OPS = ("AVERAGE_POOL_2D", "MEAN")
_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT32": np.int32,
                "INT64": np.int64, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


@dataclass(frozen=True)
class TFLiteOp:
    """One operator: its index in the file's execution order, builtin name, tensor names and options
    (``stride``/``dilation``/``filter`` as (h, w), ``padding`` and ``activation`` as names, ...)."""

    index: int
    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    options: dict[str, Any]

    def describe(self, tensor: str | None = None) -> str:
        return f"op {self.index} {self.type}" + (f" (tensor {tensor!r})" if tensor else "")


@dataclass
class TFLiteGraph:
    """A parsed single-subgraph TFLite model: ops in execution order (DEQUANTIZE of constants folded
    away), constant tensors as float32 numpy arrays (dequantized) or ints, every tensor's shape and type."""

    path: Path
    ops: list[TFLiteOp]
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def producer(self, tensor: str) -> TFLiteOp | None:
        return next((op for op in self.ops if tensor in op.outputs), None)

    def consumers(self, tensor: str) -> list[TFLiteOp]:
        return [op for op in self.ops if tensor in op.inputs]

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.type for op in self.ops))


def _import_tflite() -> Any:
    try:
        import tflite
    except ImportError:
        raise ImportError("reading .tflite files needs the 'tflite' and 'flatbuffers' packages: "
                          "pip install 'deeplab[tflite]'") from None
    return tflite


def read_tflite_tensors(path: str | os.PathLike) -> TFLiteGraph:
    """Parse a ``.tflite`` flatbuffer into ops and constant tensors; unreadable files raise ``WeightsError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such TFLite file")
    tflite = _import_tflite()
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise WeightsError(f"{path}: not a TFLite flatbuffer (no 'TFL3' file identifier)")
    try:
        return _parse(tflite, path, data)
    except WeightsError:
        raise
    except Exception as error:  # a damaged flatbuffer fails anywhere: struct, index, numpy errors
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise WeightsError(f"{path}: damaged or unsupported TFLite flatbuffer "
                           f"({type(error).__name__}{': ' + reason if reason else ''})") from None


def _enum_names(enum_class: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if isinstance(value, int)}


def _parse(tflite: Any, path: Path, data: bytes) -> TFLiteGraph:
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() != 1:
        raise WeightsError(f"{path}: expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    type_names = _enum_names(tflite.TensorType)
    names: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    constants: dict[str, np.ndarray] = {}
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        name = tensor.Name().decode("utf-8", "replace")
        name = f"{name}:{i}" if name in shapes else name  # keep keys unique should a converter repeat names
        names.append(name)
        shapes[name] = tuple(int(tensor.Shape(k)) for k in range(tensor.ShapeLength()))
        dtypes[name] = type_names.get(tensor.Type(), f"type{tensor.Type()}")
        raw = _buffer_bytes(model, data, tensor.Buffer())
        if raw is not None:
            constants[name] = _decode(path, name, raw, dtypes[name], shapes[name], tensor.Quantization())

    op_names = _enum_names(tflite.BuiltinOperator)
    ops: list[TFLiteOp] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Schema v3a moved builtin codes > 127 to BuiltinCode; older files only fill the deprecated byte.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        op_type = op_names.get(builtin, f"BUILTIN_{builtin}")
        if op_type == "CUSTOM":
            op_type = f"CUSTOM:{(code.CustomCode() or b'').decode()}"
        inputs = tuple(names[j] if j >= 0 else "" for j in (op.Inputs(k) for k in range(op.InputsLength())))
        outputs = tuple(names[op.Outputs(k)] for k in range(op.OutputsLength()))
        if op_type == "DEQUANTIZE" and inputs[0] in constants:  # fp16 / int8 weight storage: fold it
            constants[outputs[0]] = constants[inputs[0]].astype(np.float32)
            continue
        options = _options(tflite, op_type, op)
        if not options and op_type in (*CONV_OPS, *RESIZE_OPS, "AVERAGE_POOL_2D"):
            raise WeightsError(f"{path}: op {i} {op_type} (tensor {outputs[0]!r}) has no options table")
        ops.append(TFLiteOp(i, op_type, inputs, outputs, options))
    inputs = tuple(names[graph.Inputs(k)] for k in range(graph.InputsLength()))
    outputs = tuple(names[graph.Outputs(k)] for k in range(graph.OutputsLength()))
    return TFLiteGraph(path, ops, constants, shapes, dtypes, inputs, outputs)


def _buffer_bytes(model: Any, data: bytes, index: int) -> bytes | None:
    """A tensor's constant data, or None for activations (buffer 0 / empty)."""
    if index <= 0 or index >= model.BuffersLength():
        return None
    buffer = model.Buffers(index)
    if buffer.DataLength():
        return buffer.DataAsNumpy().tobytes()
    offset, size = buffer.Offset(), buffer.Size()  # files over 2 GB keep buffers after the flatbuffer
    if offset > 1 and size:
        return data[offset:offset + size]
    return None


def _decode(path: Path, name: str, raw: bytes, dtype: str, shape: tuple[int, ...], quant: Any) -> np.ndarray:
    """Bytes → numpy; quantized tensors are dequantized, fp16 widened, so weights are always float32."""
    if dtype not in _NUMPY_TYPES:
        raise WeightsError(f"{path}: tensor {name!r} has unsupported type {dtype}")
    np_type = np.dtype(_NUMPY_TYPES[dtype])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != count * np_type.itemsize:
        raise WeightsError(f"{path}: tensor {name!r} {dtype}{list(shape)} needs {count * np_type.itemsize} bytes, "
                           f"file holds {len(raw)} (truncated or damaged file)")
    array = np.frombuffer(raw, np_type).reshape(shape).copy()
    if quant is not None and quant.ScaleLength() > 0:
        scale = quant.ScaleAsNumpy().astype(np.float32)
        zero = quant.ZeroPointAsNumpy().astype(np.float32) if quant.ZeroPointLength() else np.float32(0)
        if scale.size > 1:  # per-channel: broadcast along the quantized dimension
            axis_shape = [1] * array.ndim
            axis_shape[quant.QuantizedDimension()] = scale.size
            scale, zero = scale.reshape(axis_shape), np.broadcast_to(zero, scale.shape).reshape(axis_shape)
        return ((array.astype(np.float32) - zero) * scale).astype(np.float32)
    return array.astype(np.float32) if np_type.kind == "f" else array


def _options(tflite: Any, op_type: str, op: Any) -> dict[str, Any]:
    """The builtin options this importer checks, with enums as names."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    padding, activation = _enum_names(tflite.Padding), _enum_names(tflite.ActivationFunctionType)

    def read(cls: type) -> Any:
        options = cls()
        options.Init(table.Bytes, table.Pos)
        return options

    if op_type in CONV_OPS:
        o = read(tflite.Conv2DOptions if op_type == "CONV_2D" else tflite.DepthwiseConv2DOptions)
        result = {"stride": (o.StrideH(), o.StrideW()), "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                  "padding": padding.get(o.Padding()), "activation": activation.get(o.FusedActivationFunction())}
        if op_type == "DEPTHWISE_CONV_2D":
            result["depth_multiplier"] = o.DepthMultiplier()
        return result
    if op_type in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = read(tflite.Pool2DOptions)
        return {"stride": (o.StrideH(), o.StrideW()), "filter": (o.FilterHeight(), o.FilterWidth()),
                "padding": padding.get(o.Padding()), "activation": activation.get(o.FusedActivationFunction())}
    if op_type in RESIZE_OPS:
        bilinear = op_type == "RESIZE_BILINEAR"
        o = read(tflite.ResizeBilinearOptions if bilinear else tflite.ResizeNearestNeighborOptions)
        return {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
    if op_type == "ADD":
        return {"activation": activation.get(read(tflite.AddOptions).FusedActivationFunction())}
    if op_type == "CONCATENATION":
        o = read(tflite.ConcatenationOptions)
        return {"axis": o.Axis(), "activation": activation.get(o.FusedActivationFunction())}
    if op_type == "MEAN":
        return {"keep_dims": bool(read(tflite.ReducerOptions).KeepDims())}
    return {}


def _error(graph: TFLiteGraph, op: TFLiteOp, tensor: str | None, message: str) -> WeightsError:
    return WeightsError(f"{graph.path}: {op.describe(tensor)}: {message}")
