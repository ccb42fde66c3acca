"""The TFLite importer against the authors' DeepLabV3 MobileNetV2 ×0.5 graph (``deeplabv3_257_mv_gpu.tflite``):
complete mapping, numerical parity with the TFLite runtime, clear failures, and sense on real VOC images.

Skipped when the file or the ``tflite`` package is missing; the parity tests also need ``ai_edge_litert``.
Run: ``.venv/bin/python -m pytest -q tests/test_tflite.py``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deeplab.weights.io import WeightsError

DATA = Path(os.environ.get("DEEPLAB_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"
TFLITE_FILE = DATA / "weights" / "deeplabv3_257_mv_gpu.tflite"
VOC = DATA / "voc2012_val_dev"

pytestmark = pytest.mark.skipif(not TFLITE_FILE.is_file(), reason=f"{TFLITE_FILE} not found")
tflite = pytest.importorskip("tflite")

from deeplab.data.datasets import VOC_CLASSES  # noqa: E402
from deeplab.data.normalization import SIGNED_UNIT  # noqa: E402
from deeplab.weights.tflite import (  # noqa: E402  (after the skip: the module's parser needs tflite)
    import_tflite, import_tflite_file, load_tflite, read_tflite_tensors, tflite_input)

# Written down from the file (see the module docstring of deeplab.weights.tflite), not from the importer.
EXPECTED_OPS = {"CONV_2D": 38, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "AVERAGE_POOL_2D": 1, "CONCATENATION": 1,
                "RESIZE_BILINEAR": 3}
README_PARAMS = 688_357  # data README: conv weights + conv biases (BN folded)
ASPP_1X1_OP, POOL_OP, POOLING_CONV_OP = 64, 61, 62  # execution order in the file


def voc_ids() -> list[str]:
    return (VOC / "val_dev.txt").read_text().split() if (VOC / "val_dev.txt").is_file() else []


@pytest.fixture(scope="module")
def graph():
    return read_tflite_tensors(TFLITE_FILE)


@pytest.fixture(scope="module")
def imported(graph):
    return import_tflite(graph)


def test_graph_is_the_documented_float_model(graph):
    assert graph.op_counts() == EXPECTED_OPS
    assert graph.shapes[graph.inputs[0]] == (1, 257, 257, 3)
    assert graph.shapes[graph.outputs[0]] == (1, 257, 257, 21)
    convs = [op for op in graph.ops if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    params = [name for op in convs for name in op.inputs[1:]]
    # the GPU file stores float32 weights: nothing to dequantize
    assert {graph.dtypes[name] for name in params} == {"FLOAT32"}
    assert sum(graph.constants[name].size for name in params) == README_PARAMS


def test_every_conv_mapped_exactly_once(graph, imported):
    model, mapping = imported
    conv_ops = {op.index for op in graph.ops if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")}
    our_convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(mapping) == len(conv_ops) == len(our_convs) == 55
    assert {i for i, _ in mapping} == conv_ops
    assert {name for _, name in mapping} == our_convs
    # the structural pairing: the file runs the pooling conv first, our module order has the 1x1 branch first
    assert dict(mapping)[ASPP_1X1_OP] == "classifier.0.convs.0.0"
    assert dict(mapping)[POOLING_CONV_OP] == "classifier.0.convs.1.1"


def _torch_layout(op_type: str, weight: np.ndarray) -> torch.Tensor:
    """Written independently of the importer: OHWI → OIHW, depthwise [1, kh, kw, C] → [C, 1, kh, kw]."""
    array = weight.transpose(0, 3, 1, 2) if op_type == "CONV_2D" else weight[0].transpose(2, 0, 1)[:, None]
    return torch.from_numpy(np.ascontiguousarray(array))


def test_mapped_tensors_and_geometry_equal_the_file(graph, imported):
    model, mapping = imported
    modules = dict(model.named_modules())
    ops = {op.index: op for op in graph.ops}
    concat = next(op for op in graph.ops if op.type == "CONCATENATION")
    # the file concatenates [image pooling (resized), 1x1 branch]; ours is [1x1, pooling]
    assert [graph.producer(t).index for t in concat.inputs] == [POOLING_CONV_OP + 1, ASPP_1X1_OP]
    for index, name in mapping:
        op, conv = ops[index], modules[name]
        expected = _torch_layout(op.type, graph.constants[op.inputs[1]])
        if name == "classifier.0.project.0":
            expected = torch.cat([expected[:, 256:], expected[:, :256]], dim=1)
        assert torch.equal(conv.weight, expected), name
        assert conv.stride == op.options["stride"] and conv.dilation == op.options["dilation"], name
        bias = torch.from_numpy(graph.constants[op.inputs[2]])
        if name == "classifier.1":
            assert torch.equal(conv.bias, bias)
            continue
        parent, index_in_parent = name.rsplit(".", 1)
        bn = modules[parent][int(index_in_parent) + 1]
        assert isinstance(bn, nn.BatchNorm2d) and conv.bias is None
        assert torch.equal(bn.bias, bias) and torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)
        assert torch.allclose(bn.running_var + bn.eps, torch.ones_like(bn.running_var), atol=1e-7, rtol=0)
    # the dilated depthwise convs at OS8, read from the file: expanded_conv_7..13 rate 2, 14..16 rate 4
    rates = [op.options["dilation"][0] for op in graph.ops if op.type == "DEPTHWISE_CONV_2D"]
    assert rates == [1] * 7 + [2] * 7 + [4] * 3


def test_parameter_count_matches_readme(imported):
    """TFLite counts conv weights + (folded) conv biases. Ours has the same conv weights, the classifier
    bias, and per BN a weight and a bias: the BN biases are the folded conv biases, the BN weights
    (all 1 here) are extra. So ours = 679,680 + 21 + 2 x 8,656 = 697,013 = 688,357 + 8,656."""
    model, _ = imported
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = sum(c.weight.numel() for c in convs)
    biases = sum(c.bias.numel() for c in convs if c.bias is not None) + sum(b.bias.numel() for b in bns)
    assert (weights, biases) == (679_680, 8_677)
    assert weights + biases == README_PARAMS
    assert sum(p.numel() for p in model.parameters()) == README_PARAMS + sum(b.weight.numel() for b in bns)


def test_config_and_metadata(imported):
    model, _ = imported
    assert model.config["backbone"] == "mobilenet_v2" and model.config["width_mult"] == 0.5
    assert model.config["output_stride"] == 8 and model.config["aspp_rates"] == []
    assert model.config["align_corners"] is True and model.config["num_classes"] == 21
    assert model.backbone.stage_channels == [16, 8, 12, 16, 32, 48, 80, 160]  # TF: divisible_by=1 at x0.5
    _, card = import_tflite_file(TFLITE_FILE)
    assert card.classes == tuple(VOC_CLASSES) and card.input_size == (257, 257)
    assert card.normalization == SIGNED_UNIT and card.ignore_index == 255 and card.config == model.config
    image = np.array([[[0, 127, 255]]], dtype=np.uint8)
    assert torch.allclose(tflite_input(image).flatten(), torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))


@pytest.mark.parametrize("position", [0, 1])
def test_parity_with_the_tflite_runtime(imported, position):
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    ids = voc_ids()
    if len(ids) <= position:
        pytest.skip("VOC val_dev images not found")
    x = tflite_input(Image.open(VOC / "JPEGImages" / f"{ids[position]}.jpg"), (257, 257))
    interpreter = interpreter_module.Interpreter(model_path=str(TFLITE_FILE))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).numpy())
    interpreter.invoke()
    reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    model, _ = imported
    with torch.no_grad():
        ours = model.eval()(x)[0].permute(1, 2, 0).numpy()
    diff = float(np.abs(ours - reference).max())
    spread = float(reference.max() - reference.min())
    agreement = float((ours.argmax(-1) == reference.argmax(-1)).mean())
    print(f"{ids[position]}: max |diff| {diff:.2e} (logit range {spread:.1f}), argmax agreement {agreement:.5f}")
    # measured: ~5e-5 on a ~35 range, 100 % agreement (float32 rounding; XNNPACK sums in another order)
    assert diff < 1e-4 * spread and agreement >= 0.999


def test_load_tflite_is_eval_mode_and_deterministic(imported):
    model = load_tflite(TFLITE_FILE)
    assert not model.training
    reference, _ = imported
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("keep", [0, 8, 10_000, 0.5, -1000])
def test_truncated_file_fails_naming_it(tmp_path, keep):
    data = TFLITE_FILE.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep if keep >= 0 else len(data) + keep
    broken = tmp_path / "truncated.tflite"
    broken.write_bytes(data[:size])
    with pytest.raises(WeightsError, match=str(broken).replace(".", r"\.")):
        load_tflite(broken)


def test_missing_tflite_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite", None)  # makes ``import tflite`` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'deeplab\[tflite\]'"):
        read_tflite_tensors(TFLITE_FILE)


def _reorder_ops(data: bytes, order: list[int]) -> bytes:
    """The same file with its operators vector permuted (position i runs old op ``order[i]``): the vector
    holds offsets relative to each slot, so rewrite each slot to point at the chosen op table."""
    subgraph = tflite.Model.GetRootAs(data, 0).Subgraphs(0)
    vector = subgraph._tab.Vector(subgraph._tab.Offset(10))  # SubGraph.operators
    slots = [vector + 4 * i for i in range(len(order))]
    tables = [slot + int.from_bytes(data[slot:slot + 4], "little") for slot in slots]
    out = bytearray(data)
    for slot, old in zip(slots, order):
        assert tables[old] > slot  # uoffsets point forward; tables follow the vector in this file
        out[slot:slot + 4] = (tables[old] - slot).to_bytes(4, "little")
    return bytes(out)


def test_equivalent_op_order_gives_the_same_model(tmp_path, imported):
    """Run the ASPP 1x1 conv before the image pooling (another valid topological order): pairing is by
    dataflow, so the import is identical."""
    data = TFLITE_FILE.read_bytes()
    order = list(range(tflite.Model.GetRootAs(data, 0).Subgraphs(0).OperatorsLength()))
    order.remove(ASPP_1X1_OP)
    order.insert(POOL_OP, ASPP_1X1_OP)
    path = tmp_path / "reordered.tflite"
    path.write_bytes(_reorder_ops(data, order))
    model, mapping = import_tflite(read_tflite_tensors(path))
    assert dict(mapping)[POOL_OP] == "classifier.0.convs.0.0"
    for (key, a), b in zip(model.state_dict().items(), imported[0].state_dict().values()):
        assert torch.equal(a, b), key


def test_shuffled_backbone_fails_naming_the_op(tmp_path):
    """Swap two backbone convs: the op that lands on the wrong layer is named with its tensor."""
    data = TFLITE_FILE.read_bytes()
    order = list(range(tflite.Model.GetRootAs(data, 0).Subgraphs(0).OperatorsLength()))
    order[2], order[3] = order[3], order[2]
    path = tmp_path / "shuffled.tflite"
    path.write_bytes(_reorder_ops(data, order))
    with pytest.raises(WeightsError, match=r"op 2 CONV_2D \(tensor 'MobilenetV2/expanded_conv_1/expand/weights'\)"):
        load_tflite(path)


def test_pixel_accuracy_on_real_voc_images(imported):
    ids = voc_ids()[:3]
    if len(ids) < 3:
        pytest.skip("VOC val_dev images not found")
    model, _ = imported
    for image_id in ids:
        image = Image.open(VOC / "JPEGImages" / f"{image_id}.jpg")
        label = np.asarray(Image.open(VOC / "SegmentationClass" / f"{image_id}.png"))  # palette = class ids
        with torch.no_grad():
            prediction = model(tflite_input(image))[0].argmax(0).numpy()  # native size
        valid = label != 255
        accuracy = (prediction[valid] == label[valid]).mean()
        classes, counts = np.unique(label[valid & (label > 0)], return_counts=True)
        assert accuracy > 0.9, f"{image_id}: pixel accuracy {accuracy:.3f}"  # measured 0.968, 0.948, 0.956
        assert classes[counts.argmax()] in np.unique(prediction), f"{image_id}: main object class missed"


def test_imported_model_survives_save_and_load(tmp_path) -> None:
    """The config records TF's channel rounding, so the file rebuilds the same 12-channel network."""
    from deeplab.weights.modelfile import load_model, save_model

    if not TFLITE_FILE.is_file():
        pytest.skip("tflite file absent")
    model, card = import_tflite_file(TFLITE_FILE)
    assert model.config["channel_divisor"] == 1
    path = save_model(model, tmp_path / "mobile.safetensors", card)
    loaded, metadata = load_model(path)
    image = torch.rand(1, 3, 65, 65) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.eval()(image), loaded.eval()(image))
    assert metadata.classes[15] == "person" and metadata.normalization.mean == (0.5, 0.5, 0.5)
    assert metadata == card
