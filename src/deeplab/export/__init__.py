"""Export for deployment: ONNX, TorchScript and ``torch.export`` with dynamic batch, height and width.

- ``graph.py``: ``SegmentationGraph`` — the model with its pre-processing (uint8 in) and post-processing
  (labels / probabilities out) as one traceable module;
- ``onnx.py``: ``export_onnx`` (TorchScript-based exporter, opset 17; ``exporter="dynamo"``, opset 18);
- ``torchscript.py``: ``export_torchscript`` (a traced file), ``export_program`` (in-process ``torch.export``);
- ``parity.py``: ``check_parity`` — the file against the eager model at sizes other than the trace size;
  ``label_disagreement`` — an approximate (int8) file's labels against the eager model's on real images;
- ``quantize.py``: ``write_int8_onnx`` — an int8 ONNX file calibrated on real images, for VNNI CPUs or every CPU.

Exported files carry the model's ``ModelCard`` plus their input/output contract, so ``deeplab predict -w
model.onnx`` runs them (``deeplab.inference.backends.OnnxRuntimeModel``). Files are written atomically.
"""

from .graph import DEFAULT_SAMPLE_SIZE, LAYOUTS, OUTPUTS, SegmentationGraph, build_graph
from .onnx import DEFAULT_OPSET, DYNAMO_MIN_OPSET, EXPORTERS, export_onnx
from .parity import DEFAULT_PARITY_SIZES, check_parity
from .torchscript import export_program, export_torchscript

__all__ = ["DEFAULT_OPSET", "DEFAULT_PARITY_SIZES", "DEFAULT_SAMPLE_SIZE", "DYNAMO_MIN_OPSET", "EXPORTERS", "LAYOUTS",
           "OUTPUTS", "SegmentationGraph", "build_graph", "check_parity", "export_onnx", "export_program",
           "export_torchscript"]
