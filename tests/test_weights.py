"""Weights of other people's files: torchvision DeepLabV3 / ImageNet ResNet / MobileNetV2 files, error messages,
fine-tuning, pickles that must not run.

The torchvision layout and forward pass are written out in ``torchvision_reference.py``, from torchvision's
published module structure, never from our model — torchvision itself cannot be imported in this
environment, so that is the independent reference.

Run: ``.venv/bin/python -m pytest -q tests/test_weights.py``
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import DATA, assert_one_line_naming, message_of
from torchvision_reference import (meta_state, parameter_count, random_state, relative_error, shapes_of,
                                   torchvision_deeplabv3_keys, torchvision_forward, torchvision_imagenet_resnet_keys,
                                   torchvision_resnet_keys)
from deeplab.models.builders import deeplabv3
from deeplab.weights import (
    WeightsError,
    load_backbone_weights,
    load_torchvision,
    load_weights,
    torchvision_deeplabv3_config,
)

MOBILENET_FILE = DATA / "weights" / "mobilenetv2_imagenet_features.pt"
TORCHVISION_PARAMS = {50: 42_004_074, 101: 60_996_202}  # torchvision's published deeplabv3_resnet50/101 counts
CLASS_LAYER_KEYS = {"classifier.4.weight", "classifier.4.bias", "aux_classifier.4.weight", "aux_classifier.4.bias"}

@pytest.fixture(scope="module")
def tv_r50(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-layout ``deeplabv3_resnet50`` file with random weights (21 classes, aux head)."""
    state = random_state(torchvision_deeplabv3_keys(50), seed=0)
    path = tmp_path_factory.mktemp("tv") / "deeplabv3_resnet50_coco.pth"
    torch.save(state, path)
    return path, state


# ---------------------------------------------------------------------------------------------------------
# 1. torchvision layout
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [50, 101])
def test_torchvision_layout_keys_shapes_and_parameter_count(depth):
    """``load_torchvision`` builds exactly torchvision's state-dict layout (keys and shapes), and both the
    generator and our model have torchvision's published parameter count. Built on the meta device."""
    expected = torchvision_deeplabv3_keys(depth)
    assert parameter_count(expected) == TORCHVISION_PARAMS[depth]  # the generator agrees with torchvision
    with torch.device("meta"):
        model = load_torchvision(meta_state(expected))
    assert next(model.parameters()).device.type == "meta"
    assert shapes_of(model.state_dict()) == expected
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[depth]
    assert model.backbone.depth == depth


def test_torchvision_layout_without_aux_head():
    """A checkpoint without ``aux_classifier.*`` (``aux_loss=False``) builds a model without the aux head."""
    expected = torchvision_deeplabv3_keys(50, num_classes=7, aux=False)
    with torch.device("meta"):
        model = load_torchvision(meta_state(expected))
    assert model.aux_classifier is None
    assert shapes_of(model.state_dict()) == expected


# ---------------------------------------------------------------------------------------------------------
# 2. numerical parity with torchvision's computation
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # 5-12 s alone on 2 cores: ResNet-50 forwards at output stride 8, cold oneDNN kernels
def test_torchvision_numerical_parity(tv_r50):
    """Our model loaded from a torchvision file computes torchvision's forward ("out" and "aux") on an odd
    input size; the same check rejects the paper's dilation convention, so the comparison is sensitive."""
    path, state = tv_r50
    model = load_torchvision(path).eval()
    x = torch.randn(1, 3, 65, 97, generator=torch.Generator().manual_seed(1))
    features = {}
    model.backbone.register_forward_hook(lambda module, inputs, output: features.update(output))
    with torch.no_grad():
        ref_out, ref_aux = torchvision_forward(state, x)
        out = model(x)  # eval mode returns only "out"; torchvision's "aux" is the aux head on the same features
        aux = F.interpolate(model.aux_classifier(features["aux"]), size=x.shape[-2:], mode="bilinear",
                            align_corners=False)
    assert out.shape == ref_out.shape == (1, 21, 65, 97)
    assert aux.shape == ref_aux.shape == (1, 21, 65, 97)
    assert 0.05 < ref_out.std().item() < 100, "random weights should keep activations O(1)"
    assert relative_error(out, ref_out) < 1e-4
    assert relative_error(aux, ref_aux) < 1e-4

    # The paper's convention (the whole stage dilated, first unit included) must differ measurably.
    model.backbone.first_unit_previous_dilation = False
    model.backbone.set_output_stride(8)
    with torch.no_grad():
        assert relative_error(model(x), ref_out) > 1e-2


# ---------------------------------------------------------------------------------------------------------
# 3. ImageNet ResNet classifier files
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [50, 18])
def test_imagenet_resnet_loads_every_backbone_tensor(tmp_path, depth):
    """Every backbone tensor of a torchvision ImageNet file lands in the backbone; ``fc.*`` is dropped."""
    state = random_state(torchvision_imagenet_resnet_keys(depth), seed=depth)
    path = tmp_path / ("resnet50-0676ba61.pth" if depth == 50 else "resnet18-f37072fd.pth")
    torch.save(state, path)
    model = deeplabv3(backbone=f"resnet{depth}")
    report = load_backbone_weights(model, path)
    backbone_keys = set(state) - {"fc.weight", "fc.bias"}
    assert set(report.loaded) == backbone_keys
    assert report.missing == [] and report.skipped == []
    loaded = model.backbone.state_dict()
    assert set(loaded) == backbone_keys
    for key in backbone_keys:
        assert torch.equal(loaded[key], state[key]), key


def test_imagenet_resnet_extra_blocks_reported_missing(tmp_path):
    """With cascaded block5/block6 the file still loads; exactly their keys stay at initialisation."""
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(random_state(torchvision_imagenet_resnet_keys(50), seed=3), path)
    model = deeplabv3(backbone="resnet50", extra_blocks=2)
    report = load_backbone_weights(model, path)
    extra = {k for k in model.backbone.state_dict() if k.startswith(("layer5.", "layer6."))}
    assert extra and set(report.missing) == extra
    assert set(report.loaded) == set(torchvision_resnet_keys(50))


def test_imagenet_resnet_depth_mismatch(tmp_path):
    """A ResNet-50 file into a ResNet-101 model fails naming the file and both depths."""
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(random_state(torchvision_imagenet_resnet_keys(50), seed=4), path)
    with pytest.raises(WeightsError) as error:
        load_backbone_weights(deeplabv3(backbone="resnet101"), path)
    assert_one_line_naming(error, path)
    rest = message_of(error).replace(str(path), "")  # the file name itself contains "50"
    assert re.search(r"\b50\b", rest) and re.search(r"\b101\b", rest), rest


# ---------------------------------------------------------------------------------------------------------
# 4. errors and fine-tuning
# ---------------------------------------------------------------------------------------------------------

def test_class_count_mismatch_message(tv_r50):
    """Loading a 21-class file into an 11-class model names the file, the key, both shapes and finetune."""
    path, _ = tv_r50
    model = deeplabv3(**torchvision_deeplabv3_config(50, num_classes=11))
    with pytest.raises(WeightsError) as error:
        load_weights(model, path)
    text = message_of(error)
    assert_one_line_naming(error, path)
    for fragment in ("classifier.4.weight", "(21, 256, 1, 1)", "(11, 256, 1, 1)", "finetune"):
        assert fragment in text, (fragment, text)


def test_finetune_skips_exactly_the_class_layers(tv_r50):
    """``finetune=True`` loads every tensor but the class layers of both heads, and says which it skipped."""
    path, state = tv_r50
    model = deeplabv3(**torchvision_deeplabv3_config(50, num_classes=11))
    report = load_weights(model, path, finetune=True)
    assert set(report.skipped) == CLASS_LAYER_KEYS and len(report.skipped) == 4
    loaded = model.state_dict()
    assert loaded["classifier.4.weight"].shape == (11, 256, 1, 1)
    assert set(loaded) == set(state)
    for key in set(state) - CLASS_LAYER_KEYS:
        assert torch.equal(loaded[key], state[key]), key


def test_load_torchvision_with_other_class_count(tv_r50):
    """``load_torchvision(num_classes=11)`` needs ``finetune=True``; then only the class layers are fresh."""
    path, state = tv_r50
    with pytest.raises(WeightsError) as error:
        load_torchvision(path, num_classes=11)
    assert_one_line_naming(error, path)
    model = load_torchvision(path, num_classes=11, finetune=True)
    loaded = model.state_dict()
    assert loaded["classifier.4.weight"].shape == (11, 256, 1, 1)
    assert loaded["aux_classifier.4.bias"].shape == (11,)
    for key in set(state) - CLASS_LAYER_KEYS:
        assert torch.equal(loaded[key], state[key]), key


def test_unreadable_files_fail_with_one_line_naming_the_file(tmp_path):
    """Wrong contents, empty files and missing paths fail with one line that names the file."""
    as_list = tmp_path / "list.pth"
    torch.save([torch.zeros(2), torch.ones(2)], as_list)
    text = tmp_path / "text.pth"
    text.write_text("this is not a checkpoint\nsecond line\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (as_list, text, empty):
        with pytest.raises(WeightsError) as error:
            load_torchvision(path)
        assert_one_line_naming(error, path)
    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError) as error:
        load_torchvision(missing)
    assert_one_line_naming(error, missing)


def test_imagenet_resnet_incomplete_file_names_it(tmp_path):
    """A key/shape mismatch found after the file was read still names the file, not "state dict"."""
    state = random_state(torchvision_imagenet_resnet_keys(50), seed=6)
    del state["layer4.2.bn3.running_var"]
    path = tmp_path / "resnet50-truncated.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        load_backbone_weights(deeplabv3(backbone="resnet50"), path)
    assert_one_line_naming(error, path)
    assert "layer4.2.bn3.running_var" in message_of(error)


def test_load_torchvision_rejects_other_backbone_depths(tmp_path):
    """torchvision publishes DeepLabV3 only on ResNet-50/101: a ResNet-18 backbone fails as a WeightsError
    naming the file and the depth (not a bare ValueError from the config helper)."""
    keys = {k: v for k, v in torchvision_deeplabv3_keys(50).items() if not k.startswith("backbone.")}
    keys.update(torchvision_resnet_keys(18, "backbone."))
    path = tmp_path / "deeplabv3_resnet18.pth"
    torch.save(random_state(keys, seed=8), path)
    with pytest.raises(WeightsError) as error:
        load_torchvision(path)
    assert_one_line_naming(error, path)
    assert re.search(r"\b18\b", message_of(error).replace(str(path), "")), message_of(error)


def test_imagenet_file_given_to_load_torchvision(tmp_path):
    """An ImageNet classifier is not a DeepLabV3 checkpoint: the error names the file and the right loader."""
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(random_state(torchvision_imagenet_resnet_keys(50), seed=5), path)
    with pytest.raises(WeightsError) as error:
        load_torchvision(path)
    assert_one_line_naming(error, path)
    assert "load_backbone_weights" in message_of(error)


class _WritesMarker:
    """A pickle payload that creates ``marker`` when unpickled — what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickled_code_is_not_run(tmp_path):
    """Files are read with ``weights_only=True``: the payload is refused and never runs. The same file
    loaded unsafely does create the marker, so the payload is live."""
    path = tmp_path / "evil.pth"
    marker = tmp_path / "marker"
    torch.save({"conv.weight": torch.zeros(1), "payload": _WritesMarker(marker)}, path)
    with pytest.raises(WeightsError) as error:
        load_torchvision(path)
    assert_one_line_naming(error, path)
    assert not marker.exists()
    with pytest.raises(WeightsError):
        load_weights(deeplabv3(backbone="resnet18"), path)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the control: unsafe unpickling runs the payload
    assert marker.exists()


# ---------------------------------------------------------------------------------------------------------
# 6. MobileNetV2 ImageNet weights through the dispatcher
# ---------------------------------------------------------------------------------------------------------

needs_mobilenet_file = pytest.mark.skipif(not MOBILENET_FILE.is_file(), reason=f"{MOBILENET_FILE} absent")


@needs_mobilenet_file
def test_mobilenet_imagenet_via_dispatcher():
    """``load_backbone_weights`` routes a MobileNetV2 backbone to the ImageNet importer: nothing missing,
    only ``features.18`` (the 1x1 conv to 1280 the DeepLab backbone stops before) skipped."""
    file_keys = list(torch.load(MOBILENET_FILE, map_location="cpu", weights_only=True))
    model = deeplabv3(backbone="mobilenet_v2")
    report = load_backbone_weights(model, MOBILENET_FILE)
    assert report.missing == []
    assert sorted(report.skipped) == sorted(k for k in file_keys if k.startswith("features.18."))
    assert len(report.loaded) == len(model.backbone.state_dict()) == len(file_keys) - len(report.skipped)


@needs_mobilenet_file
def test_mobilenet_imagenet_into_half_width_fails():
    """Width 1.0 weights do not fit a width-0.5 backbone: the error names the file and a shape."""
    with pytest.raises(WeightsError) as error:
        load_backbone_weights(deeplabv3(backbone="mobilenet_v2", width_mult=0.5), MOBILENET_FILE)
    assert_one_line_naming(error, MOBILENET_FILE)
    assert re.search(r"\(\d+(, \d+)+\)", message_of(error)), message_of(error)
