"""Export parity: ONNX with dynamic N, H, W, TorchScript and torch.export match eager at sizes other than the trace
size; the uint8 → labels graph gives eager's labels; exported files carry the model card; files are written
atomically; ONNX Runtime runs an exported file as a Predictor backend."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomise_bn_stats
from deeplab.data.normalization import IMAGENET, Normalization
from deeplab.export import (DEFAULT_PARITY_SIZES, DEFAULT_SAMPLE_SIZE, check_parity, export_onnx, export_program,
                            export_torchscript)
from deeplab.inference import Predictor
from deeplab.inference.backends import OnnxRuntimeModel, load_exported
from deeplab.models import DeepLab, deeplabv3, deeplabv3plus
from deeplab.utils.optional import MissingDependencyError
from deeplab.weights.card import ModelCard

HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs the export extras: pip install 'deeplab[export]'")

TOLERANCE = 1e-4
ODD, SQUARE = DEFAULT_PARITY_SIZES  # (97, 129), (65, 65): neither is the trace size
assert DEFAULT_SAMPLE_SIZE not in DEFAULT_PARITY_SIZES
MODELS = {
    "v3_mobilenet_v2_w05": lambda: deeplabv3(backbone="mobilenet_v2", width_mult=0.5, num_classes=5),
    "v3plus_resnet18": lambda: deeplabv3plus(backbone="resnet18", num_classes=5),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> DeepLab:
    torch.manual_seed(0)
    return randomise_bn_stats(MODELS[request.param](), seed=0)


@pytest.fixture(scope="module")
def mobile() -> DeepLab:
    torch.manual_seed(1)
    return randomise_bn_stats(MODELS["v3_mobilenet_v2_w05"](), seed=0)


@pytest.fixture(scope="module")
def onnx_logits(mobile: DeepLab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAS_ONNX:
        pytest.skip("needs onnx and onnxruntime")
    return export_onnx(mobile, tmp_path_factory.mktemp("onnx") / "mobile.onnx")


@needs_onnx
def test_onnx_dynamic_shapes_match_eager(model: DeepLab, tmp_path: Path) -> None:
    import onnx

    path = export_onnx(model, tmp_path / "model.onnx", opset=17)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    parity = check_parity(model, path, [ODD, SQUARE], batch_size=2)
    assert set(parity) == {ODD, SQUARE} and max(parity.values()) < TOLERANCE, parity
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_torchscript_matches_eager_at_other_sizes(model: DeepLab, tmp_path: Path) -> None:
    path = export_torchscript(model, tmp_path / "model.pt", sample_size=DEFAULT_SAMPLE_SIZE)
    parity = check_parity(model, path, [ODD, SQUARE], batch_size=1)  # traced at batch 2 and another size
    assert max(parity.values()) < TOLERANCE, parity
    run, info = load_exported(path)
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        out = run(x)
        assert out.shape == (1, 5, 33, 47)
        torch.testing.assert_close(out, model(x), atol=TOLERANCE, rtol=0)
    assert info["config"] == model.config and info["output"] == "logits" and info["input"] == "float32"


def test_torch_export_dynamic_height_and_width(model: DeepLab) -> None:
    program = export_program(model)
    module = program.module()
    with torch.no_grad():
        for batch, (height, width) in ((1, ODD), (1, SQUARE)):
            x = torch.randn(batch, 3, height, width)
            torch.testing.assert_close(module(x), model(x), atol=TOLERANCE, rtol=0)


@needs_onnx
def test_uint8_graph_gives_eager_labels(mobile: DeepLab, tmp_path: Path) -> None:
    model = mobile
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    card = ModelCard(model.config, [f"c{i}" for i in range(5)], Normalization(mean, std))
    path = export_onnx(model, tmp_path / "labels.onnx", card=card, include_preprocessing=True, layout="NHWC")
    session = OnnxRuntimeModel(path)
    assert session.input_type == "tensor(uint8)" and session.header["output"] == "labels"
    assert session.card == card and session.header["kind"] == "export"
    images = np.random.default_rng(0).integers(0, 256, (2, *ODD, 3), dtype=np.uint8)
    labels = session.run(images)
    assert labels.dtype == np.int64 and labels.shape == (2, *ODD)
    with torch.no_grad():  # the inference engine's own normalisation, then eager
        logits = model(Normalization(mean, std).to_tensor(images))
    expected = logits.argmax(dim=1).numpy()
    differ = labels != expected
    if differ.any():  # allowed only at near-ties of the two best classes, and at most 0.01 % of pixels
        top2 = logits.topk(2, dim=1).values
        assert (top2[:, 0] - top2[:, 1]).numpy()[differ].max() < TOLERANCE
        assert differ.mean() <= 1e-4
    assert check_parity(model, path, [SQUARE], batch_size=1) == {SQUARE: 0.0}


def test_torchscript_uint8_probabilities(mobile: DeepLab, tmp_path: Path) -> None:
    path = export_torchscript(mobile, tmp_path / "probs.pt", include_preprocessing=True, output="probabilities")
    parity = check_parity(mobile, path, [ODD], batch_size=1)
    assert parity[ODD] < 1e-6
    run, _ = load_exported(path)
    probs = run(torch.randint(0, 256, (1, 3, *SQUARE), dtype=torch.uint8))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, *SQUARE))


@needs_onnx
def test_onnxruntime_model_is_a_drop_in_backend(mobile: DeepLab, onnx_logits: Path) -> None:
    backend = OnnxRuntimeModel(onnx_logits)
    x = torch.randn(2, 3, *ODD)
    with torch.no_grad():
        torch.testing.assert_close(backend(x), mobile(x), atol=TOLERANCE, rtol=0)
    images = [np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
              for i, size in enumerate((ODD, SQUARE, ODD))]
    eager = Predictor(mobile, normalization=IMAGENET).predict(images)
    onnxrt = Predictor(None, normalization=IMAGENET, backend=backend).predict(images)
    for a, b in zip(eager, onnxrt):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        assert (a.labels != b.labels).mean() <= 1e-4


@needs_onnx
def test_onnxruntime_model_refuses_a_labels_graph(mobile: DeepLab, tmp_path: Path) -> None:
    path = export_onnx(mobile, tmp_path / "labels.onnx", include_preprocessing=True)
    with pytest.raises(ValueError, match="without --include-preprocessing"):
        OnnxRuntimeModel(path)(torch.randn(1, 3, 33, 33))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="junk.onnx: not a loadable ONNX model"):
        OnnxRuntimeModel(tmp_path / "junk.onnx")


@needs_onnx
def test_missing_onnxruntime_is_one_clear_line(onnx_logits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependencyError, match=r"onnxruntime is not installed.*deeplab\[export\]"):
        OnnxRuntimeModel(onnx_logits)


@needs_onnx
def test_failed_export_keeps_the_old_file(mobile: DeepLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated checker failure")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        export_onnx(mobile, target)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    with pytest.raises(ValueError, match="opset 18"):
        export_onnx(mobile, target, exporter="dynamo", opset=17)


@needs_onnx
@pytest.mark.slow  # the torch.export-based ONNX exporter takes 10-20 s on 2 cores
def test_dynamo_onnx_exporter(mobile: DeepLab, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    path = export_onnx(mobile, tmp_path / "dynamo.onnx", exporter="dynamo", opset=18)
    parity = check_parity(mobile, path, [ODD, SQUARE])
    assert max(parity.values()) < TOLERANCE, parity
