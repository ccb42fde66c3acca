"""MobileNetV2 backbone: torchvision names and sizes, TF-style dilation, and the ImageNet import.

Run: ``PYTHONPATH=src python -m pytest -q tests/test_mobilenet.py``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deeplab.models.backbones.mobilenet import MobileNetV2Backbone
from deeplab.weights.mobilenet_imagenet import convert_mobilenet_v2_imagenet, load_mobilenet_v2_imagenet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGENET_FILE = DATA / "weights" / "mobilenetv2_imagenet_features.pt"
VOC = DATA / "voc2012_val_dev"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# The paper's / torchvision's table (t, c, n, s), written out here independently of the model code.
PUBLISHED_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                     (6, 160, 3, 2), (6, 320, 1, 1)]
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
FILE_PARAMS, FEATURES_18_PARAMS = 2_223_872, 320 * 1280 + 2 * 1280  # README figure; 1x1 conv + BN
SIZE = 65


def torchvision_feature_keys() -> list[str]:
    """State-dict keys of torchvision's ``mobilenet_v2().features[:18]``, from its module structure."""
    def conv_bn(prefix: str) -> list[str]:  # Conv2dNormActivation: 0 conv, 1 BN, 2 ReLU6
        return [f"{prefix}.0.weight"] + [f"{prefix}.1.{k}" for k in BN_KEYS]

    keys = conv_bn("features.0")
    index = 1
    for t, _, n, _ in PUBLISHED_SETTING:
        for _ in range(n):
            prefix = f"features.{index}.conv"
            blocks = [conv_bn(f"{prefix}.0")] if t == 1 else [conv_bn(f"{prefix}.0"), conv_bn(f"{prefix}.1")]
            project, bn = len(blocks), len(blocks) + 1  # project 1x1 conv, then its BN
            keys += sum(blocks, []) + [f"{prefix}.{project}.weight"] + [f"{prefix}.{bn}.{k}" for k in BN_KEYS]
            index += 1
    return keys


def tf_rule(output_stride: int) -> dict[int, tuple[int, int]]:
    """``features.N -> (stride, dilation)`` of each depthwise conv, per TF ``mobilenet.py``'s loop:
    once the running stride equals the output stride, ``layer_stride = 1; layer_rate = rate;
    rate *= stride``; before that, ``layer_rate = 1``."""
    current, rate, index, geometry = 2, 1, 1, {}
    for _, _, n, s in PUBLISHED_SETTING:
        for unit in range(n):
            stride = s if unit == 0 else 1
            if current == output_stride:
                geometry[index] = (1, rate)
                rate *= stride
            else:
                geometry[index] = (stride, 1)
                current *= stride
            index += 1
    return geometry


def imagenet_image() -> torch.Tensor:
    """The first VOC val_dev image, resized to 224 and ImageNet-normalised, as a 1x3x224x224 batch."""
    image_id = (VOC / "val_dev.txt").read_text().split()[0]
    image = Image.open(VOC / "JPEGImages" / f"{image_id}.jpg").convert("RGB")
    image = image.resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std)[None]


def n_params(tensors) -> int:
    return sum(t.numel() for t in tensors)


def test_state_dict_keys_are_torchvisions() -> None:
    assert list(MobileNetV2Backbone().state_dict()) == torchvision_feature_keys()


def test_parameter_count_is_torchvision_features_without_last_conv() -> None:
    assert n_params(MobileNetV2Backbone().parameters()) == FILE_PARAMS - FEATURES_18_PARAMS == 1_811_712


def test_file_parameter_arithmetic() -> None:
    if not IMAGENET_FILE.is_file():
        pytest.skip(f"{IMAGENET_FILE} not present")
    state = torch.load(IMAGENET_FILE, map_location="cpu", weights_only=True)
    buffers = ("running_", "num_batches")
    learned = {k: v for k, v in state.items() if not k.rsplit(".", 1)[-1].startswith(buffers)}
    assert n_params(learned.values()) == FILE_PARAMS
    assert n_params(v for k, v in learned.items() if k.startswith("features.18.")) == FEATURES_18_PARAMS


def test_width_half_channels() -> None:
    backbone = MobileNetV2Backbone(width_mult=0.5)
    assert backbone.stage_channels == [16, 8, 16, 16, 32, 48, 80, 160]
    assert backbone.features[0][0].out_channels == 16
    channels = [(i.name, i.channels) for i in backbone.feature_info]
    assert channels == [("low_level", 16), ("aux", 48), ("out", 160)]
    out = backbone(torch.randn(1, 3, SIZE, SIZE))
    assert {k: v.shape[1] for k, v in out.items()} == {"low_level": 16, "aux": 48, "out": 160}


@pytest.mark.parametrize(
    ("output_stride", "sizes", "reductions"),
    [(8, (17, 9, 9), (4, 8, 8)), (16, (17, 5, 5), (4, 16, 16)), (32, (17, 5, 3), (4, 16, 32))],
)
def test_shapes_feature_info_and_dilation(output_stride: int, sizes: tuple, reductions: tuple) -> None:
    backbone = MobileNetV2Backbone(output_stride=output_stride).eval()
    assert backbone.output_stride == output_stride
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, SIZE, SIZE))
    assert list(out) == ["low_level", "aux", "out"]
    for info, size, reduction in zip(backbone.feature_info, sizes, reductions):
        assert out[info.name].shape == (1, info.channels, size, size)
        assert info.reduction == reduction
    expected = tf_rule(output_stride)
    for index, (stride, dilation) in expected.items():
        block = backbone.features[index]
        depthwise = block.conv[-3][0]
        assert depthwise.groups == depthwise.in_channels and depthwise.kernel_size == (3, 3)
        geometry = (depthwise.stride, depthwise.dilation, depthwise.padding)
        assert geometry == ((stride,) * 2, (dilation,) * 2, (dilation,) * 2), index
        pointwise = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m is not depthwise]
        assert all(m.dilation == (1, 1) and m.stride == (1, 1) for m in pointwise)


def test_os8_dilation_by_hand() -> None:
    """The TF rule spelled out: features.7 gives up its stride at entry rate 1, features.14 at rate 2."""
    backbone = MobileNetV2Backbone(output_stride=8)
    dilations = {i: backbone.features[i].conv[-3][0].dilation[0] for i in range(1, 18)}
    expected = {**{i: 1 for i in range(1, 8)}, **{i: 2 for i in range(8, 15)}, **{i: 4 for i in range(15, 18)}}
    assert dilations == expected


def test_residual_follows_nominal_stride() -> None:
    """Units that gave up their stride keep torchvision's (and TF's) no-residual decision."""
    for output_stride in (8, 16, 32):
        backbone = MobileNetV2Backbone(output_stride=output_stride)
        residual = [i for i in range(1, 18) if backbone.features[i].use_res_connect]
        assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


def test_set_output_stride_round_trip() -> None:
    torch.manual_seed(0)
    backbone = MobileNetV2Backbone(output_stride=16).eval()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        reference = backbone(x)
        backbone.set_output_stride(8)
        dense = backbone(x)
        assert backbone.output_stride == 8 and backbone.feature_info[-1].reduction == 8
        backbone.set_output_stride(16)
        again = backbone(x)
    assert dense["out"].shape[-2:] != reference["out"].shape[-2:]
    assert all(torch.equal(reference[k], again[k]) for k in reference)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert backbone.feature_info == MobileNetV2Backbone(output_stride=16).feature_info


@pytest.mark.parametrize("bad", [4, 12, 64, 16.0, True])
def test_invalid_output_stride(bad) -> None:
    with pytest.raises(ValueError, match="output_stride"):
        MobileNetV2Backbone(output_stride=bad)
    with pytest.raises(ValueError, match="output_stride"):
        MobileNetV2Backbone().set_output_stride(bad)


def test_every_parameter_gets_a_finite_gradient() -> None:
    backbone = MobileNetV2Backbone().train()
    backbone(torch.randn(2, 3, SIZE, SIZE))["out"].sum().backward()
    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_imagenet_import() -> None:
    if not IMAGENET_FILE.is_file() or not (VOC / "val_dev.txt").is_file():
        pytest.skip("ImageNet weights or VOC images not present")
    state = torch.load(IMAGENET_FILE, map_location="cpu", weights_only=True)
    mapped, unused = convert_mobilenet_v2_imagenet(state, MobileNetV2Backbone())
    assert sorted(unused) == sorted(k for k in state if k.startswith("features.18."))
    assert len(mapped) + len(unused) == len(state) == 312

    torch.manual_seed(0)
    random_init = MobileNetV2Backbone().eval()
    loaded = MobileNetV2Backbone().eval()
    assert sorted(load_mobilenet_v2_imagenet(loaded, IMAGENET_FILE).skipped) == sorted(unused)
    # the port's flat 'conv.4' is the depthwise BN that torchvision nests as 'conv.1.1'
    assert torch.equal(loaded.features[17].conv[1][1].running_var, state["features.17.conv.4.running_var"])
    assert torch.equal(loaded.features[2].conv[2].weight, state["features.2.conv.6.weight"])

    x = imagenet_image()
    batch_means: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module: nn.BatchNorm2d, inputs: tuple, _output: torch.Tensor) -> None:
        batch_means.append((inputs[0].mean((0, 2, 3)), module.running_mean))

    hooks = [loaded.features[i].conv[-3][1].register_forward_hook(record) for i in range(1, 18)]
    with torch.no_grad():
        features, baseline = loaded(x), random_init(x)
    for hook in hooks:
        hook.remove()
    assert all(torch.isfinite(v).all() for v in features.values())
    assert not torch.allclose(features["out"], baseline["out"])
    # Correctly paired weights reproduce ImageNet statistics: on a real image the channel means going
    # into each depthwise BN follow that BN's running means (a mis-paired or permuted tensor breaks this).
    correlations = [torch.corrcoef(torch.stack(pair))[0, 1].item() for pair in batch_means]
    assert float(np.median(correlations)) > 0.8, correlations


def test_wrong_shape_raises_naming_key_and_shapes(tmp_path: Path) -> None:
    state = MobileNetV2Backbone().state_dict()
    state["features.5.conv.1.0.weight"] = torch.zeros(192, 1, 5, 5)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    shapes = r"\(192, 1, 5, 5\).*\(192, 1, 3, 3\)"
    with pytest.raises(ValueError, match=r"features\.5\.conv\.1\.0\.weight.*" + shapes):
        load_mobilenet_v2_imagenet(MobileNetV2Backbone(), path)


def test_width_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="cannot map"):
        convert_mobilenet_v2_imagenet(MobileNetV2Backbone(width_mult=0.5).state_dict(), MobileNetV2Backbone())


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_mobilenet_v2_imagenet(MobileNetV2Backbone(), missing)
    not_a_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_dict)
    with pytest.raises(ValueError, match="list.pt"):
        load_mobilenet_v2_imagenet(MobileNetV2Backbone(), not_a_dict)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_mobilenet_v2_imagenet(MobileNetV2Backbone(), garbage)


def test_multi_grid_is_refused_not_ignored() -> None:
    """MobileNetV2's last stage has one unit: a grid would be silently meaningless, so it is refused."""
    from deeplab.models import deeplabv3, deeplabv3plus

    for build in (deeplabv3, deeplabv3plus):
        with pytest.raises(ValueError, match=r"multi_grid=\(1, 2, 4\) is not supported by backbone 'mobilenet_v2'"):
            build(backbone="mobilenet_v2", multi_grid=(1, 2, 4))
        assert build(backbone="mobilenet_v2").config["multi_grid"] is None
