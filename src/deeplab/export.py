"""Export for deployment: ONNX, TorchScript and ``torch.export`` with dynamic batch, height and width.

- ``SegmentationGraph``: the model plus, optionally, its pre- and post-processing — uint8 images in
  (N×3×H×W, or N×H×W×3 with ``layout="NHWC"``), normalised with the mean/std baked in as buffers, and
  int64 labels N×H×W (or logits / softmax probabilities) out.
- ``export_onnx``: ONNX file, dynamic N, H, W; TorchScript-based exporter (opset 17) by default, the
  ``torch.export``-based one with ``exporter="dynamo"`` (opset ≥ 18); checked with ``onnx.checker``.
- ``export_torchscript``: ``torch.jit.trace`` — the model reads sizes with ``x.shape`` and the tracer records
  those as graph ops, so a trace runs at any size (``check_parity`` verifies it at sizes other than the
  trace size). A TorchScript file is a program: load only files you trust.
- ``export_program``: ``torch.export.export`` with dynamic N, H, W (H, W > output stride), for in-process
  use; not offered as a file format because ``torch.export.load`` unpickles with ``weights_only=False``.
- ``OnnxRuntimeModel``: an exported ONNX logits model as a torch-in, torch-out callable (CPU), for
  ``deeplab.inference.Predictor(backend=...)``.
- ``check_parity``: exported file vs eager at sizes other than the trace size.

Exported files describe themselves like ``save_model`` files: a ``deeplab`` JSON entry (ONNX metadata
props / TorchScript extra file) holds the model config, the file metadata, the input kind, normalisation
and output. Files are written atomically (temporary file beside the target, fsync, rename).

    python -m deeplab export --weights model.safetensors --format onnx --output model.onnx --include-preprocessing
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import __version__
from .fileio import atomic_write, atomic_write_bytes
from .inference import IMAGENET

OUTPUTS = ("labels", "logits", "probabilities")
LAYOUTS = ("NCHW", "NHWC")
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17
DYNAMO_MIN_OPSET = 18  # the torch.export-based exporter emits opset 18 and cannot convert every op down
DEFAULT_SAMPLE_SIZE = (72, 88)  # trace size; deliberately none of DEFAULT_PARITY_SIZES
DEFAULT_PARITY_SIZES = ((97, 129), (65, 65))
SAMPLE_BATCH = 2  # not 1: a batch of 1 would let torch.export specialise the batch dimension to 1
METADATA_KEY = "deeplab"  # ONNX metadata_props key; TorchScript extra file "deeplab.json"
EXPORT_FORMAT = "deeplab.export"
INSTALL_HINT = "pip install 'deeplab[export]'"


class MissingDependencyError(ImportError):
    """An optional export dependency (onnx, onnxruntime, onnxscript) is not installed; one-line message."""


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise MissingDependencyError(f"{module} is not installed; install the export extras: {INSTALL_HINT}") from None


class SegmentationGraph(nn.Module):
    """``model`` with its pre- and post-processing, as one traceable graph.

    With ``preprocess=True`` (default) the input is uint8 images, N×3×H×W (``layout="NCHW"``) or N×H×W×3
    (``"NHWC"``), normalised as ``(x / scale − mean) / std`` exactly as ``deeplab.inference.Normalization``
    does; with ``preprocess=False`` it is the already normalised float N×3×H×W batch. ``output`` picks
    int64 ``labels`` N×H×W (argmax), float ``logits`` N×C×H×W or ``probabilities`` (softmax over C).
    """

    def __init__(self, model: nn.Module, *, output: str = "labels", preprocess: bool = True,
                 mean: Sequence[float] = IMAGENET.mean, std: Sequence[float] = IMAGENET.std,
                 scale: float = IMAGENET.scale, layout: str = "NCHW") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout != "NCHW" and not preprocess:
            raise ValueError(f"layout {layout} applies to uint8 images; a normalised float input is always NCHW")
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or float(scale) <= 0:
            raise ValueError(f"need 3 mean and 3 positive std values and a positive scale, got mean={mean} "
                             f"std={std} scale={scale}")
        self.model = model
        self.output, self.preprocess, self.layout, self.scale = output, preprocess, layout, float(scale)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.preprocess:
            if self.layout == "NHWC":
                x = x.permute(0, 3, 1, 2)
            x = (x.float() / self.scale - self.mean) / self.std  # Normalization.to_tensor's order of ops
        logits = self.model(x)
        if self.output == "logits":
            return logits
        if self.output == "probabilities":
            return torch.softmax(logits, dim=1)
        return logits.argmax(dim=1)

    def description(self) -> dict[str, Any]:
        """The input/output contract, stored in exported files."""
        normalization = ({"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                          "scale": self.scale} if self.preprocess else None)
        return {"input": "uint8" if self.preprocess else "float32", "layout": self.layout,
                "normalization": normalization, "output": self.output}

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
        """A random input of this graph's kind (uint8 images or a standard-normal float batch)."""
        device = self.mean.device
        if not self.preprocess:
            return torch.randn(batch, 3, height, width, generator=generator).to(device)
        shape = (batch, height, width, 3) if self.layout == "NHWC" else (batch, 3, height, width)
        pixel_values = torch.iinfo(torch.uint8).max + 1
        return torch.randint(0, pixel_values, shape, dtype=torch.uint8, generator=generator).to(device)

    def dynamic_dims(self) -> tuple[dict[int, str], dict[int, str]]:
        """Input and output axes that vary: batch, height, width."""
        spatial = (1, 2) if self.layout == "NHWC" else (2, 3)
        inputs = {0: "batch", spatial[0]: "height", spatial[1]: "width"}
        if self.output == "labels":
            return inputs, {0: "batch", 1: "height", 2: "width"}
        return inputs, {0: "batch", 2: "height", 3: "width"}


def build_graph(model: nn.Module, *, include_preprocessing: bool = False, output: str | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                scale: float | None = None, layout: str = "NCHW") -> SegmentationGraph:
    """The graph the exporters trace. ``output`` defaults to labels with preprocessing, logits without."""
    output = output or ("labels" if include_preprocessing else "logits")
    return SegmentationGraph(model, output=output, preprocess=include_preprocessing, layout=layout,
                             mean=IMAGENET.mean if mean is None else mean, std=IMAGENET.std if std is None else std,
                             scale=IMAGENET.scale if scale is None else scale).to(_device(model))


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the export, then each submodule's own mode back (frozen BN stays frozen)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    # The tracer warns about Python bools it folds (ASPPPooling's training-only batch check) and torch
    # deprecates the TorchScript paths we choose knowingly; check_parity is what proves the graph right.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*(legacy TorchScript-based ONNX|torch\.jit\.(trace|save|load)|"
                                                  r"feature will be removed)", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.(trace|save|load)", category=FutureWarning)
        yield


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _header(graph: SegmentationGraph, metadata: dict[str, Any] | None, **extra: Any) -> str:
    return json.dumps({"format": EXPORT_FORMAT, "format_version": 1, "code_version": __version__,
                       "config": getattr(graph.model, "config", {}), "metadata": dict(metadata or {}),
                       **graph.description(), **extra})


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, dynamic: bool = True,
                include_preprocessing: bool = False, output: str | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None, scale: float | None = None,
                layout: str = "NCHW", sample_size: tuple[int, int] = DEFAULT_SAMPLE_SIZE,
                exporter: str = "torchscript", metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width (``dynamic=False``: fixed at
    1×``sample_size``). Input ``image`` (uint8, with ``include_preprocessing``) or ``input`` (normalised
    float); output named after ``output``. Validated with ``onnx.checker``, written atomically."""
    onnx = _require("onnx")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ValueError(f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later, got opset {opset}")
    graph = build_graph(model, include_preprocessing=include_preprocessing, output=output, mean=mean, std=std,
                        scale=scale, layout=layout)
    sample = graph.sample(SAMPLE_BATCH if dynamic else 1, *sample_size)
    in_dims, out_dims = graph.dynamic_dims()
    names = (["image" if include_preprocessing else "input"], [graph.output])
    with _eval_mode(graph), _quiet_tracing(), torch.no_grad():
        if exporter == "dynamo":
            _require("onnxscript")
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
    entry.key, entry.value = METADATA_KEY, _header(graph, metadata, exporter=exporter, opset=opset)
    return atomic_write_bytes(path, proto.SerializeToString())


def export_torchscript(model: nn.Module, path: str | os.PathLike, *, include_preprocessing: bool = False,
                       output: str | None = None, mean: Sequence[float] | None = None,
                       std: Sequence[float] | None = None, scale: float | None = None, layout: str = "NCHW",
                       sample_size: tuple[int, int] = DEFAULT_SAMPLE_SIZE,
                       metadata: dict[str, Any] | None = None) -> Path:
    """Write a traced ``model`` (``torch.jit.load`` reads it); any batch and size work, not just the trace's."""
    graph = build_graph(model, include_preprocessing=include_preprocessing, output=output, mean=mean, std=std,
                        scale=scale, layout=layout)
    with _eval_mode(graph), _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(graph, graph.sample(SAMPLE_BATCH, *sample_size), check_trace=False)
    extra = {f"{METADATA_KEY}.json": _header(graph, metadata, exporter="torch.jit.trace")}

    def write(handle: io.BufferedWriter) -> None:
        with _quiet_tracing():
            torch.jit.save(traced, handle, _extra_files=extra)

    return atomic_write(path, write)


def export_program(model: nn.Module, *, include_preprocessing: bool = False, output: str | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   scale: float | None = None, layout: str = "NCHW",
                   sample_size: tuple[int, int] = DEFAULT_SAMPLE_SIZE) -> torch.export.ExportedProgram:
    """``torch.export.export`` with dynamic batch, height and width. H and W must exceed the output stride
    (torch.export assumes every feature map is larger than 1×1). For in-process use (``program.module()``,
    AOTInductor); see the module docstring for why it is not offered as a file format."""
    graph = build_graph(model, include_preprocessing=include_preprocessing, output=output, mean=mean, std=std,
                        scale=scale, layout=layout)
    smallest = int(getattr(model, "output_stride", 32)) + 1
    in_dims, _ = graph.dynamic_dims()
    dims = {axis: torch.export.Dim(name, min=1 if name == "batch" else smallest) for axis, name in in_dims.items()}
    with _eval_mode(graph), torch.no_grad():
        return torch.export.export(graph, (graph.sample(SAMPLE_BATCH, *sample_size),), dynamic_shapes=(dims,))


class OnnxRuntimeModel:
    """An exported ONNX file run by onnxruntime (CPU by default).

    ``model(x)`` takes a normalised float N×3×H×W tensor (any device) and returns float32 logits N×C×H×W on
    the same device — a drop-in for the torch model in ``Predictor(backend=...)``; that needs a file
    exported without preprocessing and with logits output. ``run(array)`` runs any exported graph on numpy.
    """

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ValueError(f"{self.path}: not a loadable ONNX model ({reason})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.info: dict[str, Any] = json.loads(raw) if raw else {}
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type
        self.output_name = self.session.get_outputs()[0].name

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``save_model`` metadata the file was exported with (classes, mean, std, ...)."""
        return dict(self.info.get("metadata", {}))

    def run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(array)})[0]

    def __call__(self, x: Tensor) -> Tensor:
        if self.input_type != "tensor(float)" or self.info.get("output", "logits") != "logits":
            raise ValueError(f"{self.path}: takes {self.input_type} and returns {self.info.get('output')}; as a "
                             "model backend export it without --include-preprocessing and with logits output")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run(array)).to(x.device)


def load_exported(path: str | os.PathLike, device: torch.device | str = "cpu"
                  ) -> tuple[Callable[[Tensor], Tensor], dict[str, Any]]:
    """An exported file (``.onnx``: onnxruntime; otherwise TorchScript) as ``(tensor → tensor, header)``."""
    path = Path(path)
    if path.suffix == ".onnx":
        session = OnnxRuntimeModel(path)
        return lambda x: torch.from_numpy(session.run(x.cpu().numpy())), session.info
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such TorchScript file")
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with _quiet_tracing():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as error:  # torch raises RuntimeError or zip errors for non-TorchScript files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(f"{path}: not a TorchScript file ({reason})") from None
    raw = extra[f"{METADATA_KEY}.json"]
    return (lambda x: module(x.to(device)).cpu()), json.loads(raw) if raw else {}


def check_parity(model: nn.Module, exported_path: str | os.PathLike,
                 sizes: Sequence[tuple[int, int]] = DEFAULT_PARITY_SIZES, *, batch_size: int = SAMPLE_BATCH,
                 seed: int = 0) -> dict[tuple[int, int], float]:
    """Run the exported file and ``model`` (eager, same pre/post-processing, read from the file) on the same
    random batch at each size; returns ``{(H, W): max abs difference}`` of the outputs. For a labels graph
    the value is the fraction of pixels whose label differs (0.0: identical). Compare on the same device:
    TF32 convolutions on CUDA alone differ from CPU by ~1e-3."""
    run, info = load_exported(exported_path, _device(model))
    normalization = info.get("normalization") or {}
    graph = build_graph(model, include_preprocessing=info.get("input") == "uint8", output=info.get("output", "logits"),
                        layout=info.get("layout", "NCHW"), **normalization)
    generator = torch.Generator().manual_seed(seed)
    results: dict[tuple[int, int], float] = {}
    with _eval_mode(graph), torch.inference_mode():
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
