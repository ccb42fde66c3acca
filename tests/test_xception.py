"""Aligned Xception-65: shapes, the dilation actually applied, structure, parameter count, OS switching,
gradients. Expected values are derived here from the paper's rules, not read back from the model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deeplab.models.backbones.xception import Xception65Backbone

OUTPUT_STRIDES = (8, 16, 32)
# (name, nominal stride) of each planned stage, the middle flow counted as one stage.
STAGES = (("entry.block1", 2), ("entry.block2", 2), ("entry.block3", 2), ("middle", 1),
          ("exit.block1", 2), ("exit.block2", 1))


@pytest.fixture(scope="module")
def model() -> Xception65Backbone:
    return Xception65Backbone(output_stride=16).eval()


def conv_out(size: int, stride: int) -> int:
    """Output size of a 3x3 'same'-padded conv (or a 1x1 unpadded one) with this stride."""
    return (size - 1) // stride + 1


def expected_geometry(output_stride: int) -> dict[str, tuple[int, int]]:
    """(stride, dilation) per stage by TF's stack_blocks_dense: the stage that reaches the output
    stride runs at stride 1 with the current rate, and the rate is multiplied only after it."""
    running, rate, geometry = 2, 1, {}
    for name, stride in STAGES:
        if running == output_stride:
            geometry[name] = (1, rate)
            rate *= stride
        else:
            geometry[name] = (stride, rate)
            running *= stride
    return geometry


def stage_blocks(m: Xception65Backbone) -> dict[str, list[nn.Module]]:
    return {"entry.block1": [m.entry_flow.block1], "entry.block2": [m.entry_flow.block2],
            "entry.block3": [m.entry_flow.block3], "middle": list(m.middle_flow),
            "exit.block1": [m.exit_flow.block1], "exit.block2": [m.exit_flow.block2]}


def test_expected_geometry_examples() -> None:
    # The brief's worked examples, to pin the helper itself.
    assert expected_geometry(16)["exit.block1"] == (1, 1) and expected_geometry(16)["exit.block2"] == (1, 2)
    g8 = expected_geometry(8)
    assert [g8[n] for n in ("entry.block3", "middle", "exit.block1", "exit.block2")] == [
        (1, 1), (1, 2), (1, 2), (1, 4)]
    assert all(d == 1 for _, d in expected_geometry(32).values())


@pytest.mark.parametrize("size", [(65, 65), (33, 47)])
@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
def test_shapes_and_feature_info(
    model: Xception65Backbone, output_stride: int, size: tuple[int, int]
) -> None:
    model.set_output_stride(output_stride)
    try:
        info = {f.name: (f.channels, f.reduction) for f in model.feature_info}
        with torch.no_grad():
            feats = model(torch.randn(1, 3, *size))
    finally:
        model.set_output_stride(16)  # the module-scoped fixture is shared
    # The stem conv and the four stride-2 blocks (entry 1-3, exit 1) each halve the size until the
    # running stride reaches output_stride; sizes[k] is the size after the k-th of them.
    sizes, running = [size], 1
    for _ in range(5):
        if running < output_stride:
            running *= 2
            sizes.append(tuple(conv_out(s, 2) for s in sizes[-1]))
        else:
            sizes.append(sizes[-1])
    want = {"low_level": (128, 4, sizes[2]), "aux": (728, min(16, output_stride), sizes[4]),
            "out": (2048, output_stride, sizes[5])}
    assert set(feats) == set(want) == set(info)
    for name, (channels, reduction, spatial) in want.items():
        assert feats[name].shape == (1, channels, *spatial), name
        assert info[name] == (channels, reduction), name
    if size == (65, 65):
        assert feats["out"].shape[-1] == {8: 9, 16: 5, 32: 3}[output_stride]
        assert feats["low_level"].shape[-1] == 17


@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
def test_dilation_applied(output_stride: int) -> None:
    model = Xception65Backbone(output_stride=output_stride)
    assert model.output_stride == output_stride
    for name, (stride, dilation) in expected_geometry(output_stride).items():
        for block in stage_blocks(model)[name]:
            for i, sep in enumerate((block.sep1, block.sep2, block.sep3)):
                conv = sep.depthwise
                want_stride = stride if i == 2 else 1  # the third sep conv replaces the max-pool
                assert conv.kernel_size == (3, 3), name
                assert conv.groups == conv.in_channels, name
                assert (conv.stride, conv.dilation, conv.padding) == (
                    (want_stride,) * 2, (dilation,) * 2, (dilation,) * 2), (name, i)
            if hasattr(block, "skip"):
                assert block.skip.stride == (stride, stride) and block.skip.kernel_size == (1, 1), name


def test_no_pooling_and_strided_convs_are_separable(model: Xception65Backbone) -> None:
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1) and m.kernel_size != (1, 1):
            if name == "entry_flow.conv1":  # the stem's dense conv is the one strided non-separable conv
                continue
            assert (m.kernel_size, m.stride, m.groups) == ((3, 3), (2, 2), m.in_channels), name


def test_depthwise_followed_by_bn_relu(model: Xception65Backbone) -> None:
    # Record the execution order of leaf modules: after each depthwise conv must run a BN then a ReLU.
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 33, 33))
    finally:
        for h in hooks:
            h.remove()
    depthwise = [k for k, m in enumerate(order) if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 3 * (3 + 16 + 2)
    for k in depthwise:
        assert isinstance(order[k + 1], nn.BatchNorm2d) and isinstance(order[k + 2], nn.ReLU)


def test_parameter_count(model: Xception65Backbone) -> None:
    def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> int:
        return cin // groups * cout * k * k + 2 * cout  # bias-free conv + BN affine

    def block(cin: int, channels: tuple[int, int, int], conv_skip: bool) -> int:
        total, c = 0, cin
        for cout in channels:
            total += conv_bn(c, c, 3, groups=c) + conv_bn(c, cout, 1)
            c = cout
        return total + (conv_bn(cin, channels[-1], 1) if conv_skip else 0)

    expected = conv_bn(3, 32, 3) + conv_bn(32, 64, 3)
    expected += block(64, (128,) * 3, True) + block(128, (256,) * 3, True) + block(256, (728,) * 3, True)
    expected += 16 * block(728, (728,) * 3, False)
    expected += block(728, (728, 1024, 1024), True) + block(1024, (1536, 1536, 2048), False)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_set_output_stride_round_trip(model: Xception65Backbone) -> None:
    x = torch.randn(1, 3, 33, 47)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)
        model.set_output_stride(8)
        assert model.output_stride == 8 and model.feature_info[-1].reduction == 8
        model.set_output_stride(16)
        after = model(x)
    assert model.output_stride == 16
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in params.items())


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = Xception65Backbone(output_stride=16).train()
    feats = model(torch.randn(2, 3, 33, 33))
    sum(f.square().mean() for f in feats.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    assert math.isfinite(sum(float(p.grad.sum()) for p in model.parameters()))


@pytest.mark.parametrize("bad", [4, 12, 64, 16.0, True])
def test_invalid_output_stride(model: Xception65Backbone, bad: object) -> None:
    with pytest.raises(ValueError, match=r"\(8, 16, 32\)"):
        Xception65Backbone(output_stride=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(8, 16, 32\)"):
        model.set_output_stride(bad)  # type: ignore[arg-type]
    assert model.output_stride == 16


@pytest.mark.parametrize("output_stride, rate", [(16, 2), (8, 4)])
def test_multi_grid_sets_the_unit_rates_of_the_last_exit_block(output_stride: int, rate: int) -> None:
    """As the authors' xception_65 applies multi_grid: the three separable convs of exit block2 run at
    rate × (r1, r2, r3); every other block keeps its plain rate; the default grid is (1, 1, 1)."""
    from deeplab.models import deeplabv3plus

    plain = Xception65Backbone(output_stride=output_stride)
    grid = Xception65Backbone(output_stride=output_stride, multi_grid=(1, 2, 4))

    def rates(block) -> list[int]:
        return [sep.depthwise.dilation[0] for sep in (block.sep1, block.sep2, block.sep3)]

    assert rates(plain.exit_flow.block2) == [rate] * 3
    assert rates(grid.exit_flow.block2) == [rate, 2 * rate, 4 * rate]
    for name, blocks in stage_blocks(grid).items():
        if name != "exit.block2":
            assert [rates(b) for b in blocks] == [rates(b) for b in stage_blocks(plain)[name]], name
    model = deeplabv3plus(backbone="xception65", num_classes=3, output_stride=output_stride, multi_grid=(1, 2, 4))
    assert model.config["multi_grid"] == [1, 2, 4]
    assert deeplabv3plus(backbone="xception65", num_classes=3).config["multi_grid"] == [1, 1, 1]
    grid.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 65, 65, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(grid.eval()(x)["out"], plain.eval()(x)["out"])  # the grid changes the output
    with pytest.raises(ValueError, match="3 positive integer rates"):
        Xception65Backbone(multi_grid=(1, 2))
