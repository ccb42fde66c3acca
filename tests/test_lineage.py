"""The DeepLab lineage: v1 LargeFOV and v2 ASPP-L/S (structure, applied rates, summed branches), the VGG-16 and
MobileNetV3-Large backbones with torchvision's names (key lists, parameter counts, numerical parity with a
reference written from torchvision's structure), and ResNet output strides up to 256 (the paper's Table 1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import applied_dilations
from deeplab.models import deeplabv1, deeplabv2, deeplabv3
from deeplab.models.aspp_v2 import ASPP_S_RATES
from deeplab.models.atrous import AtrousConv2d
from deeplab.models.backbones import MobileNetV3LargeBackbone, ResNetBackbone, VGG16Backbone
from deeplab.models.complexity import count_parameters
from deeplab.weights import load_backbone_weights, load_torchvision, torchvision_deeplabv3_config
from torchvision_reference import (parameter_count, random_state, relative_error, shapes_of,
                                   torchvision_deeplabv3_mobilenet_v3_keys, torchvision_mobilenet_v3_forward,
                                   torchvision_mobilenet_v3_keys, torchvision_vgg16_keys)

TORCHVISION_MOBILENET_V3_PARAMS = 11_029_328  # torchvision's published deeplabv3_mobilenet_v3_large count


def on_meta(build, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build(**kwargs).eval()


def pool_strides(model: nn.Module, image: torch.Tensor) -> dict[str, tuple[int, int, int]]:
    """(kernel, stride, padding) of every max-pool as called."""
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, _i, _o, n=n: seen.__setitem__(n, (mod.kernel_size, mod.stride,
                                                                                  mod.padding)))
             for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)]
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    return seen


# --- DeepLab v1 LargeFOV -------------------------------------------------------------------------------

def test_largefov_is_vgg16_at_stride_8_with_fc6_at_rate_12() -> None:
    model = on_meta(deeplabv1, num_classes=21)
    image = torch.empty(1, 3, 513, 513, device="meta")
    assert model.output_stride == 8 and model.backbone(image)["out"].shape[-2:] == (65, 65)
    pools = pool_strides(model, image)
    assert pools == {f"backbone.features.{i}": (3, s, 1) for i, s in ((4, 2), (9, 2), (16, 2), (23, 1), (30, 1))}
    seen = applied_dilations(model, image)
    conv5 = [24, 26, 28]
    for name, (dilation, stride) in seen.items():
        if name.startswith("backbone."):
            index = int(name.split(".")[2])
            assert (dilation, stride) == ((2 if index in conv5 else 1), 1), name
    assert seen["classifier.branches.0.0"] == (12, 1)
    branch = model.classifier.branches[0]
    assert [type(m) for m in branch] == [AtrousConv2d, nn.ReLU, nn.Dropout, nn.Conv2d, nn.ReLU, nn.Dropout, nn.Conv2d]
    assert (branch[0].in_channels, branch[0].out_channels, branch[3].out_channels, branch[6].out_channels) == (
        512, 1024, 1024, 21)
    assert branch[3].kernel_size == branch[6].kernel_size == (1, 1) and branch[2].p == branch[5].p == 0.5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.classifier.modules())


# --- DeepLab v2 -----------------------------------------------------------------------------------------

def test_aspp_v2_sums_four_branches_without_bn_or_pooling() -> None:
    """The head is the sum of its branches' class scores (a known answer from the branches themselves)."""
    torch.manual_seed(0)
    model = deeplabv2(backbone="resnet18", num_classes=5).eval()
    assert model.aspp_rates == (6, 12, 18, 24) and model.output_stride == 8
    head = model.classifier
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.AdaptiveAvgPool2d)) for m in head.modules())
    x = torch.randn(2, 3, 49, 67)
    with torch.no_grad():
        features = model.backbone(x)
        branches = [branch(features["out"]) for branch in head.branches]
        expected = F.interpolate(sum(branches), size=(49, 67), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
        assert min((a - b).abs().max() for a in branches for b in branches if a is not b) > 1e-3  # distinct
    assert deeplabv2(backbone="vgg16", aspp_rates=ASPP_S_RATES).aspp_rates == (2, 4, 8, 12)
    with model.at_output_stride(16):
        assert model.aspp_rates == (3, 6, 9, 12)  # rate × output stride is kept
    assert model.aspp_rates == (6, 12, 18, 24)


def test_v2_resnet101_dilates_whole_stages_without_multi_grid() -> None:
    model = on_meta(deeplabv2, backbone="resnet101")
    assert model.config["multi_grid"] == [1, 1, 1]
    seen = applied_dilations(model, torch.empty(1, 3, 65, 65, device="meta"))
    assert [seen[f"backbone.layer3.{i}.conv2"][0] for i in range(23)] == [2] * 23
    assert [seen[f"backbone.layer4.{i}.conv2"][0] for i in range(3)] == [4] * 3
    assert [seen[f"classifier.branches.{i}.0"][0] for i in range(4)] == [6, 12, 18, 24]
    released = on_meta(deeplabv2, backbone="resnet101", aspp_channels=0)  # one conv per branch, to the classes
    assert [len(b) for b in released.classifier.branches] == [1] * 4
    assert 43e6 < count_parameters(released) < 45e6  # the authors' ResNet-101 DeepLab v2 (~44 M)


# --- VGG-16 -----------------------------------------------------------------------------------------------

def test_vgg16_has_torchvisions_names_and_loads_its_imagenet_file() -> None:
    reference = {k: v for k, v in torchvision_vgg16_keys().items() if k.startswith("features.")}
    backbone = VGG16Backbone()
    assert shapes_of(backbone.state_dict()) == reference
    state = random_state(torchvision_vgg16_keys(), seed=3)
    model = deeplabv1(num_classes=4)
    report = load_backbone_weights(model, state)
    assert sorted(report.skipped) == sorted(k for k in state if k.startswith("classifier."))
    assert all(torch.equal(model.backbone.state_dict()[k], state[k]) for k in reference)


@pytest.mark.parametrize("output_stride, pools, conv5, size", [
    (8, (2, 2, 2, 1, 1), 2, 65), (16, (2, 2, 2, 2, 1), 1, 33), (32, (2, 2, 2, 2, 2), 1, 17)])
def test_vgg16_output_stride(output_stride: int, pools: tuple, conv5: int, size: int) -> None:
    backbone = on_meta(VGG16Backbone, output_stride=output_stride)
    image = torch.empty(1, 3, 513, 513, device="meta")
    assert backbone(image)["out"].shape[-2:] == (size, size)
    assert tuple(s for _, s, _ in pool_strides(backbone, image).values()) == pools
    assert backbone.conv_dilations[4] == [conv5] * 3 and backbone.conv_dilations[3] == [1] * 3


# --- MobileNetV3-Large: torchvision's deeplabv3_mobilenet_v3_large ------------------------------------------

def test_mobilenet_v3_layout_and_parameter_count() -> None:
    expected = torchvision_deeplabv3_mobilenet_v3_keys()
    assert parameter_count(expected) == TORCHVISION_MOBILENET_V3_PARAMS  # the generator agrees with torchvision
    model = on_meta(deeplabv3, **torchvision_deeplabv3_config("mobilenet_v3_large"))
    assert shapes_of(model.state_dict()) == expected
    assert count_parameters(model) == TORCHVISION_MOBILENET_V3_PARAMS
    info = {f.name: (f.channels, f.reduction) for f in model.backbone.feature_info}
    assert info == {"low_level": (24, 4), "aux": (40, 8), "out": (960, 16)}


@pytest.mark.slow
def test_mobilenet_v3_matches_torchvisions_forward(tmp_path) -> None:
    """A torchvision-layout file with random weights loads as it is and computes torchvision's function."""
    state = random_state(torchvision_deeplabv3_mobilenet_v3_keys(), seed=5)
    path = tmp_path / "deeplabv3_mobilenet_v3_large.pth"
    torch.save(state, path)
    model = load_torchvision(path).eval()
    assert model.config["backbone"] == "mobilenet_v3_large" and model.aux_classifier is not None
    x = torch.randn(2, 3, 97, 129, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_out, expected_aux = torchvision_mobilenet_v3_forward(state, x)
        out = model(x)
        aux = F.interpolate(model.aux_classifier(model.backbone(x)["aux"]), size=x.shape[-2:], mode="bilinear",
                            align_corners=False)
    assert relative_error(out, expected_out) < 1e-4 and relative_error(aux, expected_aux) < 1e-4
    assert expected_out.std() > 1e-3  # not a degenerate comparison


def test_mobilenet_v3_imagenet_file_loads_into_the_backbone() -> None:
    features = {"features." + k: v for k, v in random_state(torchvision_mobilenet_v3_keys(prefix=""), seed=1).items()}
    state = {**features, "classifier.0.weight": torch.zeros(1280, 960), "classifier.0.bias": torch.zeros(1280)}
    backbone = MobileNetV3LargeBackbone()
    report = load_backbone_weights(backbone, state)
    assert sorted(report.skipped) == ["classifier.0.bias", "classifier.0.weight"]
    assert all(torch.equal(backbone.state_dict()[k[len("features."):]], v) for k, v in features.items())


@pytest.mark.parametrize("output_stride, dilations", [(16, [2, 2, 2]), (8, [4, 4, 4])])
def test_mobilenet_v3_dilates_the_whole_stage(output_stride: int, dilations: list[int]) -> None:
    """torchvision's rule for this network: every unit of a stage past the output stride runs at the
    multiplied rate, the one that gave up its stride included."""
    backbone = MobileNetV3LargeBackbone(output_stride=output_stride)
    assert [backbone.units[i].depthwise.dilation[0] for i in (12, 13, 14)] == dilations
    assert backbone.units[12].depthwise.stride == (1, 1)
    assert backbone(torch.randn(1, 3, 65, 65))["out"].shape[-1] == {16: 5, 8: 9}[output_stride]


# --- ResNet output strides beyond 32 (the paper's Table 1) ------------------------------------------------

@pytest.mark.parametrize("output_stride, size, strides, rates", [
    (8, 65, [1, 1, 1], [8, 16, 32]), (16, 33, [1, 1, 1], [4, 8, 16]), (32, 17, [1, 1, 1], [2, 4, 8]),
    (64, 9, [2, 1, 1], [1, 2, 4]), (128, 5, [2, 2, 1], [1, 1, 2]), (256, 3, [2, 2, 2], [1, 1, 1])])
def test_cascaded_resnet_reaches_output_stride_256(output_stride: int, size: int, strides: list[int],
                                                   rates: list[int]) -> None:
    """ResNet-50 + block5..7 without atrous convolution past 32 (and, as in Table 1, before Multi-Grid): the
    copies keep striding while the running stride is below the target (513 → 3×3 at OS256); past it they
    dilate as before."""
    model = on_meta(deeplabv3, backbone="resnet50", extra_blocks=3, aspp=False, output_stride=output_stride,
                    multi_grid=(1, 1, 1))
    image = torch.empty(1, 3, 513, 513, device="meta")
    assert model.backbone(image)["out"].shape[-2:] == (size, size)
    seen = applied_dilations(model, image)
    assert [seen[f"backbone.layer{b}.0.conv2"][1] for b in (5, 6, 7)] == strides
    assert [seen[f"backbone.layer{b}.2.conv2"][0] for b in (5, 6, 7)] == rates
    if output_stride == 256:
        assert all(d == 1 for name, (d, _) in seen.items() if ".layer" in name)  # no atrous at all
    assert model.backbone.feature_info[-1].reduction == output_stride
    params = {k for k, _ in model.named_parameters()}
    assert not any(".layer5.0.downsample" in k for k in params)  # a striding copy subsamples its shortcut


def test_output_strides_the_architecture_cannot_reach_are_refused() -> None:
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 64"):
        ResNetBackbone(depth=18, output_stride=64)
    with pytest.raises(ValueError, match=r"one of \(8, 16, 32, 64\), got 128"):
        ResNetBackbone(depth=18, extra_blocks=1, output_stride=128)
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\)"):
        deeplabv3(backbone="mobilenet_v2", output_stride=64)
    with pytest.raises(ValueError, match="no integer equivalent at output stride 64"):
        deeplabv3(backbone="resnet50", extra_blocks=1, output_stride=64)  # the ASPP's 6 at OS16 is 1.5 at 64
    model = on_meta(deeplabv3, backbone="resnet18", extra_blocks=1, aspp=False)
    with pytest.raises(ValueError, match=r"one of \(8, 16, 32, 64\), got 128"):
        model.set_output_stride(128)


@pytest.mark.parametrize("build, kwargs", [(deeplabv1, {}), (deeplabv2, {"backbone": "resnet18"}),
                                           (deeplabv3, {"backbone": "mobilenet_v3_large", "aux_loss": True})])
def test_one_backward_reaches_every_parameter(build, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build(num_classes=3, **kwargs).train()
    out = model(torch.randn(2, 3, 49, 57))
    loss = sum(o.square().mean() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
