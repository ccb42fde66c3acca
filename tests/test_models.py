"""Model tests, after torchvision's and timm's: every model × output stride, the dilation each conv really
applies, ASPP rates, feature sizes, gradients, expected outputs, parameter counts, FLOPs, API errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import expected_outputs
from conftest import applied_dilations
from deeplab.models import ASPP, aspp_rates_for, build_model, deeplabv3, deeplabv3plus, get_model, list_models
from deeplab.models.backbones import BACKBONES, ResNetBackbone
from deeplab.models.complexity import count_gflops, count_parameters
from deeplab.weights import torchvision_deeplabv3_config

OUTPUT_STRIDES = (8, 16, 32)


def on_meta(build, **kwargs) -> nn.Module:
    """Shape-only checks run on the meta device: no memory, no arithmetic, any model size."""
    with torch.device("meta"):
        return build(**kwargs).eval()


# --- shapes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
def test_every_model_returns_logits_at_input_size(name: str, output_stride: int) -> None:
    torch.manual_seed(0)
    if name.startswith("deeplabv2") and output_stride == 32:  # ASPP-L's rate 6 at OS8 would be 1.5 at OS32
        with pytest.raises(ValueError, match="no integer equivalent at output stride 32; pass aspp_rates"):
            get_model(name, num_classes=3, output_stride=output_stride)
        return
    model = get_model(name, num_classes=3, output_stride=output_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 47))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 33, 47)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(33, 47), (97, 129), (8, 8), (1, 1)])
def test_any_input_size(size: tuple[int, int]) -> None:
    model = deeplabv3plus(backbone="resnet18", num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size) and torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("output_stride, expected", [(8, 65), (16, 33), (32, 17)])
def test_feature_map_size_at_513(backbone: str, output_stride: int, expected: int) -> None:
    """The paper's arithmetic: 513 input → 65×65 at OS8, 33×33 at OS16 (and 17 at OS32)."""
    model = on_meta(deeplabv3, backbone=backbone, output_stride=output_stride)
    features = model.backbone(torch.empty(1, 3, 513, 513, device="meta"))
    assert features["out"].shape[-2:] == (expected, expected)
    assert features["low_level"].shape[-2:] == (129, 129)
    info = {f.name: f for f in model.backbone.feature_info}
    assert info["out"].reduction == output_stride and info["low_level"].reduction == 4
    for name, feature in features.items():
        assert feature.shape[1] == info[name].channels


def test_aux_logits_only_in_training() -> None:
    model = deeplabv3(backbone="resnet18", num_classes=3, aux_loss=True)
    out, aux = model.train()(torch.randn(2, 3, 33, 47))
    assert out.shape == aux.shape == (2, 3, 33, 47)
    assert isinstance(model.eval()(torch.randn(1, 3, 33, 47)), torch.Tensor)
    assert isinstance(deeplabv3(backbone="resnet18", num_classes=3).train()(torch.randn(2, 3, 33, 47)), torch.Tensor)


def test_batch_of_one_in_training_fails_clearly_and_works_in_eval() -> None:
    model = deeplabv3(backbone="resnet18", num_classes=3)
    with pytest.raises(ValueError, match="batch of 1"):
        model.train()(torch.randn(1, 3, 33, 33))
    assert model.eval()(torch.randn(1, 3, 33, 33)).shape == (1, 3, 33, 33)


# --- dilation and rates -------------------------------------------------------------------------------

@pytest.mark.parametrize("output_stride, block3, block4", [
    (32, [1] * 6, [1, 2, 4]),
    (16, [1] * 6, [2, 4, 8]),   # the paper's example: OS16, Multi_Grid (1, 2, 4) → (2, 4, 8)
    (8, [2] * 6, [4, 8, 16]),
])
def test_resnet_multi_grid_dilations(output_stride: int, block3: list[int], block4: list[int]) -> None:
    model = on_meta(deeplabv3, backbone="resnet50", output_stride=output_stride, multi_grid=(1, 2, 4))
    seen = applied_dilations(model, torch.empty(1, 3, 65, 65, device="meta"))
    assert [seen[f"backbone.layer3.{i}.conv2"][0] for i in range(6)] == block3
    assert [seen[f"backbone.layer4.{i}.conv2"][0] for i in range(3)] == block4
    strides = [seen[f"backbone.layer{s}.0.conv2"][1] for s in (2, 3, 4)]
    assert strides == {32: [2, 2, 2], 16: [2, 2, 1], 8: [2, 1, 1]}[output_stride]
    assert all(seen[f"backbone.layer{s}.{i}.conv2"][0] == 1 for s, n in ((1, 3), (2, 4)) for i in range(n))


def test_cascaded_blocks_double_the_rate_per_block() -> None:
    """The paper's best cascade: ResNet-101 + block7, Multi_Grid (1, 2, 1), OS16 → block4..7 base rates
    2, 4, 8, 16, each unit × (1, 2, 1); block5..7 are 3-unit copies of block4 with stride 1."""
    model = on_meta(deeplabv3, backbone="resnet101", extra_blocks=3, multi_grid=(1, 2, 1), aspp=False)
    seen = applied_dilations(model, torch.empty(1, 3, 65, 65, device="meta"))
    for block, base in zip((4, 5, 6, 7), (2, 4, 8, 16)):
        assert [seen[f"backbone.layer{block}.{i}.conv2"] for i in range(3)] == [(base * r, 1) for r in (1, 2, 1)]
    layer4, layer7 = model.backbone.layer4, model.backbone.layer7
    assert [p.shape for p in layer4[1].parameters()] == [p.shape for p in layer7[0].parameters()]
    assert model.backbone(torch.empty(1, 3, 513, 513, device="meta"))["out"].shape[-1] == 33


def test_torchvision_dilation_convention() -> None:
    """torchvision keeps the previous dilation in the first unit of a newly dilated stage (OS8)."""
    model = on_meta(deeplabv3, **torchvision_deeplabv3_config(50))
    assert model.backbone.unit_dilations["layer3"] == [1] + [2] * 5
    assert model.backbone.unit_dilations["layer4"] == [2, 4, 4]


def test_basic_block_resnet_uses_first_two_grid_rates() -> None:
    model = on_meta(deeplabv3, backbone="resnet18", multi_grid=(1, 2, 4), extra_blocks=1)
    assert model.backbone.unit_dilations["layer4"] == [2, 4]
    assert model.backbone.unit_dilations["layer5"] == [4, 8, 16]


@pytest.mark.parametrize("output_stride, rates", [(8, (12, 24, 36)), (16, (6, 12, 18)), (32, (3, 6, 9))])
def test_aspp_rates_are_derived_from_output_stride(output_stride: int, rates: tuple[int, ...]) -> None:
    assert aspp_rates_for(output_stride) == rates
    model = on_meta(deeplabv3, backbone="resnet50", output_stride=output_stride)
    assert model.aspp_rates == rates
    seen = applied_dilations(model, torch.empty(1, 3, 65, 65, device="meta"))
    assert tuple(seen[f"classifier.0.convs.{i}.0"][0] for i in (1, 2, 3)) == rates


def test_aspp_options() -> None:
    mobile = ASPP(64, rates=())
    assert len(mobile.convs) == 2 and mobile.rates == ()  # 1×1 + image pooling only
    assert mobile.project[0].in_channels == 2 * 256
    no_pool = ASPP(64, rates=(6, 12, 18), image_pooling=False)
    assert len(no_pool.convs) == 4 and no_pool.project[0].in_channels == 4 * 256
    separable = ASPP(64, rates=(6, 12, 18), separable=True)
    depthwise = separable.convs[1][0]
    assert depthwise.groups == 64 and depthwise.dilation == (6, 6) and separable.convs[1][3].kernel_size == (1, 1)
    # every branch has BN + ReLU; the projection has BN + ReLU + dropout
    for branch in ASPP(64).convs:
        kinds = [type(m) for m in branch]
        assert nn.BatchNorm2d in kinds and nn.ReLU in kinds
    assert [type(m) for m in ASPP(64, dropout=0.3).project] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout]
    assert ASPP(64, rates=(2, 3), out_channels=32).convs[2][0].padding == (3, 3)


def test_image_pooling_branch_is_global_context() -> None:
    """The image-level branch is constant over space and equals the pooled input's projection."""
    aspp = ASPP(8, rates=(), out_channels=4).eval()
    x = torch.randn(2, 8, 9, 11)
    pooled = aspp.convs[1](x)
    assert pooled.shape == (2, 4, 9, 11)
    assert torch.allclose(pooled, pooled[:, :, :1, :1].expand_as(pooled))
    reference = nn.Sequential(*list(aspp.convs[1])[1:])(x.mean(dim=(2, 3), keepdim=True))
    assert torch.allclose(pooled[:, :, 0, 0], reference[:, :, 0, 0], atol=1e-6)


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3plus_xception65", "deeplabv3_mobilenet_v2"])
def test_switch_output_stride_in_place(name: str) -> None:
    """Train at OS16, evaluate at OS8 with the same weights (paper §4.3); switching back is exact."""
    torch.manual_seed(0)
    model = get_model(name, num_classes=3).eval()
    image = torch.randn(1, 3, 49, 49)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        at16 = model(image)
        model.set_output_stride(8)
        at8 = model(image)
        features = model.backbone(image)["out"]
        model.set_output_stride(16)
        again = model(image)
    assert model.output_stride == 16 and model.aspp_rates == (6, 12, 18)
    assert features.shape[-1] == 7 and at8.shape == at16.shape and not torch.equal(at8, at16)
    assert torch.equal(at16, again)
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())


def test_switch_output_stride_updates_rates_and_keeps_the_config() -> None:
    """Switching changes what the model computes, never the config a model file records (how it was built)."""
    model = on_meta(deeplabv3, backbone="resnet50")
    built = dict(model.config)
    with model.at_output_stride(8):
        assert model.aspp_rates == (12, 24, 36) and model.backbone.unit_dilations["layer4"] == [4, 8, 16]
    assert model.output_stride == 16 and model.aspp_rates == (6, 12, 18)
    assert model.backbone.unit_dilations["layer4"] == [2, 4, 8]
    with pytest.raises(RuntimeError), model.at_output_stride(8):
        raise RuntimeError("an error inside the block")
    assert model.output_stride == 16 and model.aspp_rates == (6, 12, 18)  # restored on error too
    model.set_output_stride(8)
    assert model.aspp_rates == (12, 24, 36) and model.backbone.unit_dilations["layer4"] == [4, 8, 16]
    assert model.config == built and model.config["output_stride"] == 16 and model.config["aspp_rates"] == [6, 12, 18]
    model.set_output_stride(32, aspp_rates=(2, 4, 6))
    assert model.aspp_rates == (2, 4, 6)
    with pytest.raises(ValueError, match=r"\(8, 16, 32\)"):
        model.set_output_stride(4)


# --- training signal -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(arch="deeplabv3", backbone="resnet18", aux_loss=True, extra_blocks=1),
    dict(arch="deeplabv3", backbone="mobilenet_v2", width_mult=0.5, aspp_rates=()),
    dict(arch="deeplabv3plus", backbone="mobilenet_v2", separable_aspp=True, separable_decoder=True, aux_loss=True),
    dict(arch="deeplabv3", backbone="resnet50", separable_aspp=True, head_conv=True, output_stride=8),
    pytest.param(dict(arch="deeplabv3plus", backbone="xception65"), marks=pytest.mark.slow),
], ids=lambda k: "-".join(str(v) for v in k.values()))
def test_every_parameter_gets_a_finite_gradient(kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_model({**kwargs, "num_classes": 3}).train()
    out = model(torch.randn(2, 3, 33, 33))
    loss = sum(o.square().mean() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "classifier" in n and "weight" in n)


# --- known answers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(expected_outputs.FAMILIES))
def test_expected_outputs(name: str) -> None:
    expected = expected_outputs.load(name)
    actual = expected_outputs.compute(name)
    assert actual.shape == expected.shape
    scale = expected.abs().max()
    assert scale > 0 and expected.std() > 0  # the stored file is not degenerate
    assert (actual - expected).abs().max() <= 1e-4 * scale + 1e-6


@pytest.mark.parametrize("depth, parameters", [(50, 42_004_074), (101, 60_996_202)])
def test_torchvision_parameter_counts(depth: int, parameters: int) -> None:
    assert count_parameters(on_meta(deeplabv3, **torchvision_deeplabv3_config(depth))) == parameters


@pytest.mark.parametrize("depth, gflops", [(50, 178.72), (101, 258.74)])
def test_gflops_match_torchvision_tables(depth: int, gflops: float) -> None:
    """torchvision's published GFLOPS for deeplabv3_resnet50/101 at 520×520 (aux head included)."""
    model = on_meta(deeplabv3, **torchvision_deeplabv3_config(depth))
    assert math.isclose(count_gflops(model, 520, 520, include_aux=True), gflops, abs_tol=0.01)


def test_output_stride_costs_what_the_paper_says() -> None:
    """Halving the output stride multiplies the dilated stages' work: OS8 > OS16 > OS32."""
    costs = [count_gflops(on_meta(deeplabv3, backbone="resnet101", output_stride=os), 513, 513)
             for os in OUTPUT_STRIDES]
    assert costs[0] > 3 * costs[1] > 3 * costs[2] / 2


# --- API errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(backbone="resnet20"), r"unknown backbone 'resnet20'; valid backbones: resnet18, .*xception65"),
    (dict(output_stride=4), r"output_stride must be one of \(8, 16, 32\)"),
    (dict(output_stride=16.0), r"output_stride must be one of"),
    (dict(multi_grid=(1, 2)), r"multi_grid must be 3 positive integer rates"),
    (dict(multi_grid=(1, 0, 2)), r"multi_grid"),
    (dict(extra_blocks=4), r"extra_blocks must be one of \(0, 1, 2, 3\)"),
    (dict(backbone="mobilenet_v2", extra_blocks=1), r"extra_blocks=1 is not supported by backbone 'mobilenet_v2'"),
    (dict(backbone="resnet50", width_mult=0.5), r"width_mult=0.5 is not supported"),
    (dict(num_classes=0), r"num_classes must be a positive integer"),
    (dict(aspp_rates=(6, -1)), r"ASPP rates must be positive integers"),
])
def test_invalid_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deeplabv3(**kwargs)


def test_builders_are_keyword_only_and_names_are_listed() -> None:
    with pytest.raises(TypeError):
        deeplabv3("resnet50")  # type: ignore[misc]
    assert "deeplabv3_resnet101" in list_models() and "deeplabv3plus_xception65" in list_models()
    assert len(list_models()) == 2 * len(BACKBONES) + 3  # + deeplabv1_vgg16, deeplabv2_resnet101, deeplabv2_vgg16
    with pytest.raises(ValueError, match="valid models: deeplabv1_vgg16, deeplabv2_resnet101, .*deeplabv3_resnet18"):
        get_model("deeplabv4_resnet50")


def test_config_rebuilds_the_same_architecture() -> None:
    model = on_meta(deeplabv3plus, backbone="mobilenet_v2", width_mult=0.5, output_stride=8, num_classes=5)
    rebuilt = on_meta(build_model, config=model.config)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert rebuilt.output_stride == 8 and rebuilt.aspp_rates == (12, 24, 36)
    assert isinstance(on_meta(deeplabv3, backbone="resnet18").backbone, ResNetBackbone)
