"""A torch DeepLab model as the callable (normalised float N×3×H×W → float32 logits) of one inference path —
what ``Predictor(backend=...)`` runs in ``predict``, ``eval``, ``serve`` and ``benchmark``:

- ``torch``: batch norm folded into the convolutions (exact), channels-last; ``bf16``: bf16 autocast, on CPUs
  with bf16 instructions; ``compile=True``: ``torch.compile`` (inductor, frozen weights);
- ``onnxruntime``: exported to ONNX (a temporary file), run by ONNX Runtime;
- ``openvino``: converted by OpenVINO from the torch model, run by its CPU plugin with the precision hint set
  explicitly — its default on CPUs with bf16 units is bf16, so ``fp32`` asks for f32;
- ``int8``: statically quantized on calibration images (``quantize.py``), the one int8 ONNX graph run by ONNX
  Runtime or by OpenVINO (which runs its quantized convolutions on AMX-INT8 / VNNI: ResNet-101 at 513² in 88 ms
  against ONNX Runtime's 174 ms on a Xeon with AMX).

Every path keeps the model's output stride at conversion time and takes any input size. ``fp32`` paths equal
the eager model to float rounding; ``bf16`` ones to a tolerance the tests state.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..models.folding import fold_batchnorm
from ..utils.machine import has_fast_bf16
from ..utils.optional import require
from ..utils.signal_stack import kept_signal_stack

if TYPE_CHECKING:
    from ..inference.backends import OnnxRuntimeModel

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
Runner = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class InferencePath:
    backend: str = "torch"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "bf16" and self.backend == "onnxruntime":
            raise ValueError("ONNX Runtime has no bf16 CPU path; use --backend openvino or torch for bf16")
        if self.precision == "int8" and self.backend == "torch":
            raise ValueError("int8 runs on --backend onnxruntime or openvino (statically quantized on calibration "
                             "images)")
        if self.compile and self.backend != "torch":
            raise ValueError("compile applies to the torch backend")

    @property
    def name(self) -> str:
        return f"{self.backend}{'+compile' if self.compile else ''} {self.precision}"


def check_precision_supported(precision: str) -> None:
    """bf16 without bf16 instructions is emulated — many times slower, so it is refused rather than run."""
    if precision == "bf16" and not has_fast_bf16():
        raise ValueError("--precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated "
                         "(slower than fp32); use fp32")


def _torch_runner(model: nn.Module, precision: str, compile: bool) -> Runner:
    folded, _ = fold_batchnorm(model)
    folded = folded.to(memory_format=torch.channels_last)
    if precision == "bf16" and not compile:
        # the weights in bf16 once, as autocast would cast them on every call (18 % of ResNet-101's eager bf16
        # time at 513²); a compiled graph folds those casts itself
        folded = folded.to(torch.bfloat16)
    forward = folded
    if compile:
        import torch._inductor.config as inductor

        inductor.freezing = True  # weights become constants: folded and laid out once, at compile time
        inductor.cpp_wrapper = True  # the graph called from C++, not Python: 1.2x on the CamVid decoder model
        forward = torch.compile(folded, dynamic=False)

    def run(x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            return forward(x).float()

    run.module = folded  # type: ignore[attr-defined]  (for FLOP counting)
    return run


class OpenVinoRunner:
    """The model converted once by OpenVINO (dynamic batch and size), then compiled for the CPU per input
    shape — a static shape lets the plugin plan its kernels (measured 26 → 19 ms on the CamVid MobileNetV2,
    for 0.1 s of compiling per new shape; the ``max_shapes`` most recent are kept) — with an explicit
    precision hint and thread count.

    ``model``: a torch model, or an ONNX file with a normalised float N×3×H×W input and logits out (an fp32
    export, or the int8 one of ``write_int8_onnx``, whose quantized nodes OpenVINO runs in int8 whatever the
    hint; the hint then governs the float rest, which ``fp32``/``int8`` keep in f32). Static shapes are also
    what keeps int8 right: OpenVINO 2026.4 compiled for a dynamic size gave the authors' int8 model labels that
    agree with fp32 on 31 % of a photo's pixels (99.5 % static) — and an int8 shape takes ~0.6 s to compile, so
    int8 on OpenVINO suits inputs of a few sizes (video, cameras, a resized stream)."""

    def __init__(self, model: nn.Module | str | Path, precision: str = "fp32", threads: int | None = None,
                 example_size: tuple[int, int] = (257, 257), max_shapes: int = 8) -> None:
        self.ov = require("openvino", "openvino")
        if isinstance(model, nn.Module):
            folded, _ = fold_batchnorm(model)
            with torch.no_grad():
                self.converted = self.ov.convert_model(folded, example_input=torch.zeros(1, 3, *example_size),
                                                       input=[self.ov.PartialShape([-1, 3, -1, -1])])
        else:
            self.converted = self.ov.Core().read_model(str(model))
        self.config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                       "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.core, self.max_shapes = self.ov.Core(), max_shapes
        self.compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def _request(self, shape: tuple[int, ...]):
        if shape in self.compiled:
            self.compiled.move_to_end(shape)
            return self.compiled[shape]
        static = self.converted.clone()
        static.reshape({0: self.ov.PartialShape(list(shape))})
        with kept_signal_stack():  # the plugin swaps the thread's signal stack here and back on release
            compiled = self.core.compile_model(static, "CPU", self.config)
            self.compiled[shape] = (compiled, compiled.create_infer_request())
            del compiled
            if len(self.compiled) > self.max_shapes:
                self.compiled.popitem(last=False)
        return self.compiled[shape]

    def close(self) -> None:
        """Releases the compiled models (also on garbage collection), keeping the thread's signal stack."""
        with kept_signal_stack():
            self.compiled.clear()

    def __del__(self) -> None:
        if getattr(self, "compiled", None):
            self.close()

    def __call__(self, x: Tensor) -> Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        compiled, request = self._request(array.shape)
        out = request.infer({0: array})[compiled.output(0)]
        return torch.from_numpy(np.array(out, dtype=np.float32)).to(x.device)


def _onnxruntime_runner(model: nn.Module, threads: int | None) -> Runner:
    from ..inference.backends import OnnxRuntimeModel
    from .onnx import export_onnx

    folded, _ = fold_batchnorm(model)
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(folded, Path(folder) / "model.onnx")
        return OnnxRuntimeModel(path, threads=threads)  # the session holds the graph; the file can go


def _int8_runner(model: nn.Module, backend: str, calibration: Sequence[Tensor], threads: int | None) -> Runner:
    """The int8 ONNX graph of ``write_int8_onnx`` (this CPU's rule), loaded by ``backend`` from a temporary file."""
    from ..inference.backends import OnnxRuntimeModel
    from .quantize import write_int8_onnx

    with tempfile.TemporaryDirectory() as folder:
        quantized = write_int8_onnx(model, calibration, Path(folder) / "int8.onnx")
        if backend == "openvino":
            return OpenVinoRunner(quantized, "int8", threads)
        return OnnxRuntimeModel(quantized, threads=threads)  # the session holds the graph; the file can go


def exported_runner(exported: "OnnxRuntimeModel", backend: str, threads: int | None = None) -> Runner:
    """An exported ONNX file (fp32, or int8 from ``deeplab export --precision int8``) on ``backend``: its ONNX
    Runtime session, or OpenVINO reading the same file (int8 on AMX-INT8: ResNet-101 2× ONNX Runtime)."""
    if backend == "onnxruntime":
        return exported
    if backend != "openvino":
        raise ValueError(f"{exported.path}: an .onnx file runs on --backend onnxruntime or openvino, not {backend}")
    exported.check_logits_graph()
    return OpenVinoRunner(exported.path, exported.header.get("precision", "fp32"), threads)


def build_runner(model: nn.Module, path: InferencePath, *, threads: int | None = None,
                 calibration: Sequence[Tensor] = ()) -> Runner:
    """The callable of ``path`` for ``model`` (eval mode, at its current output stride); ``calibration``:
    the images int8 takes its activation ranges from."""
    check_precision_supported(path.precision)
    model = model.eval()
    threads = threads or torch.get_num_threads()
    if path.backend == "torch":
        return _torch_runner(model, path.precision, path.compile)
    if path.precision == "int8":
        return _int8_runner(model, path.backend, calibration, threads)
    if path.backend == "openvino":
        return OpenVinoRunner(model, path.precision, threads)
    return _onnxruntime_runner(model, threads)


__all__ = ["BACKENDS", "PRECISIONS", "InferencePath", "OpenVinoRunner", "build_runner", "check_precision_supported",
           "exported_runner"]
