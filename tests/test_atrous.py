"""The tap-pruned atrous convolution: where the rate reaches past the feature map, the outer taps of the 3×3
filter only read padding; dropping them is exact and saves their FLOPs — and an exported graph keeps them all."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deeplab.data.io import read_image
from deeplab.data.normalization import IMAGENET
from deeplab.models.atrous import AtrousConv2d


def _flops(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


@pytest.fixture(scope="module")
def camvid_frame(shared_data) -> torch.Tensor:
    """A real CamVid frame at half size (180×240), normalised: OS8 features are 23×30."""
    path = sorted((shared_data / "camvid" / "val").glob("*.png"))[0]
    image = np.asarray(Image.fromarray(read_image(path)).resize((240, 180), Image.BILINEAR))
    return IMAGENET.to_tensor(image)


@pytest.mark.parametrize("size, rate, kept", [
    ((23, 30), 12, 9), ((23, 30), 24, 3), ((30, 23), 24, 3), ((23, 30), 36, 1), ((23, 30), 23, 3), ((23, 30), 22, 9),
])
def test_pruned_filter_equals_the_full_one_with_fewer_flops(resnet, camvid_frame, size, rate, kept) -> None:
    torch.manual_seed(0)
    with torch.no_grad():  # real features: the backbone's stride-8 map of a real frame, resized to ``size``
        features = torch.nn.functional.interpolate(resnet.backbone(camvid_frame)["out"], size=size)
    full = nn.Conv2d(features.shape[1], 16, 3, padding=rate, dilation=rate, bias=True)
    pruned = AtrousConv2d(features.shape[1], 16, 3, padding=rate, dilation=rate, bias=True)
    pruned.load_state_dict(full.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(pruned(features), full(features), rtol=0, atol=1e-5)
    assert _flops(pruned, features) * 9 == _flops(full, features) * kept


def test_model_at_os8_on_a_half_scale_frame_is_unchanged_and_cheaper(resnet, camvid_frame, monkeypatch) -> None:
    model = copy.deepcopy(resnet)
    with model.at_output_stride(8), torch.no_grad():
        assert model.aspp_rates == (12, 24, 36)
        pruned_logits, pruned_flops = model(camvid_frame), _flops(model, camvid_frame)
        monkeypatch.setattr(AtrousConv2d, "forward", nn.Conv2d.forward)  # every tap computed
        full_logits, full_flops = model(camvid_frame), _flops(model, camvid_frame)
    torch.testing.assert_close(pruned_logits, full_logits, rtol=0, atol=1e-4)
    assert (pruned_logits.argmax(1) == full_logits.argmax(1)).all()
    tap = 2 * 512 * 256 * 23 * 30  # one tap of a 512 → 256 branch on the 23×30 map
    assert full_flops - pruned_flops == tap * (6 + 8)  # rate 24: rows only (6 taps saved); rate 36: 8 saved


def test_a_traced_graph_keeps_every_tap_for_larger_inputs(resnet) -> None:
    model = copy.deepcopy(resnet).eval()
    small, large = torch.randn(1, 3, 65, 65), torch.randn(1, 3, 257, 257)  # shapes only: features 5² vs 17²
    with torch.no_grad():
        traced = torch.jit.trace(model, small, check_trace=False)
        torch.testing.assert_close(traced(large), model(large), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(traced(small), model(small), rtol=1e-5, atol=1e-4)


@pytest.fixture
def one_matmul_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-matmul form for every atrous 3×3 in bf16, on any CPU (it is chosen only where AMX makes the
    dilated kernel the slow one; its arithmetic is the same everywhere)."""
    import deeplab.models.atrous as atrous

    monkeypatch.setattr(atrous, "has_amx", lambda: True)
    monkeypatch.setattr(atrous, "ONE_MATMUL_MIN_CHANNELS", 1)
    monkeypatch.setattr(atrous, "ONE_MATMUL_MIN_RATE", 2)


@pytest.mark.parametrize("size, rate", [((23, 30), 6), ((23, 30), 12), ((23, 30), 24), ((23, 30), 36), ((30, 23), 24)])
def test_taps_as_one_matmul_is_the_convolution_within_bf16_rounding(resnet, camvid_frame, one_matmul_everywhere,
                                                                    size, rate) -> None:
    """Each tap's products rounded to bf16 once, summed in fp32, rounded once more: against the exact sum of the
    bf16 inputs' products, every output is within those roundings — for every pruning (all taps, rows only,
    the centre alone) and both orientations."""
    torch.manual_seed(0)
    with torch.no_grad():
        features = torch.nn.functional.interpolate(resnet.backbone(camvid_frame)["out"], size=size)
    conv = AtrousConv2d(features.shape[1], 32, 3, padding=rate, dilation=rate, bias=True).eval()
    x = features.to(torch.bfloat16).float().contiguous(memory_format=torch.channels_last)
    weight = conv.weight.detach().to(torch.bfloat16).float()
    with torch.no_grad():
        exact = torch.nn.functional.conv2d(x.double(), weight.double(), None, 1, rate, rate)
        taps = [torch.zeros_like(weight) for _ in range(9)]
        for k, tap in enumerate(taps):
            tap[:, :, k // 3, k % 3] = weight[:, :, k // 3, k % 3]
        magnitude = sum(torch.nn.functional.conv2d(x.double(), t.double(), None, 1, rate, rate).abs() for t in taps)
        bias = conv.bias.detach().double().view(1, -1, 1, 1)  # added in fp32, after the taps
        with torch.autocast("cpu", torch.bfloat16):
            assert conv.taps_as_one_matmul(x)
            ours = conv(x)
    assert ours.dtype == torch.bfloat16 and ours.shape == exact.shape
    error = (ours.double() - exact - bias).abs()
    bound = 2.0 ** -8 * (magnitude + (exact + bias).abs()) + 1e-6
    assert (error <= bound).all(), float((error / bound).max())
    assert float(error.max()) > 0  # bf16 really ran (an fp32 path would be exact here)


def test_taps_as_one_matmul_only_where_the_dilated_kernel_is_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    import deeplab.models.atrous as atrous

    monkeypatch.setattr(atrous, "has_amx", lambda: True)
    wide = AtrousConv2d(2048, 8, 3, padding=12, dilation=12)
    x = torch.zeros(1, 2048, 5, 5)
    with torch.no_grad():
        with torch.autocast("cpu", torch.bfloat16):
            assert wide.taps_as_one_matmul(x) and wide.taps_as_one_matmul(x.bfloat16())
            assert not AtrousConv2d(1024, 8, 3, padding=12, dilation=12).taps_as_one_matmul(x[:, :1024])
            assert not AtrousConv2d(2048, 8, 3, padding=2, dilation=2).taps_as_one_matmul(x)
            assert not AtrousConv2d(2048, 2048, 3, padding=12, dilation=12, groups=2048).taps_as_one_matmul(x)
        assert not wide.taps_as_one_matmul(x)  # fp32: oneDNN's dilated kernel is the fast one
    with torch.autocast("cpu", torch.bfloat16):  # training: the dilated kernel's backward is the faster one
        assert not wide.taps_as_one_matmul(x)
        assert wide.requires_grad_(False).taps_as_one_matmul(x)  # nothing to differentiate: inference
    monkeypatch.setattr(atrous, "has_amx", lambda: False)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        assert not wide.taps_as_one_matmul(x)


def test_a_bf16_model_with_one_matmul_taps_labels_a_real_frame_like_the_dilated_kernel(resnet, camvid_frame,
                                                                                      monkeypatch) -> None:
    """The whole model at OS8 in bf16 (its ASPP at rates 12, 24, 36 on 23×30 features: all taps, rows only,
    the centre alone): the same labels as with oneDNN's dilated kernel, the logits as close to fp32."""
    import deeplab.models.atrous as atrous

    model = copy.deepcopy(resnet).eval()
    with model.at_output_stride(8), torch.no_grad():
        fp32 = model(camvid_frame)
        with torch.autocast("cpu", torch.bfloat16):
            dilated = model(camvid_frame).float()
            monkeypatch.setattr(atrous, "has_amx", lambda: True)
            monkeypatch.setattr(atrous, "ONE_MATMUL_MIN_CHANNELS", 1)
            monkeypatch.setattr(atrous, "ONE_MATMUL_MIN_RATE", 2)
            assert all(m.taps_as_one_matmul(torch.zeros(1, m.in_channels, 1, 1)) for m in model.modules()
                       if isinstance(m, AtrousConv2d) and m.groups == 1)
            ours = model(camvid_frame).float()
    agreement = (ours.argmax(1) == fp32.argmax(1)).double().mean()
    assert agreement >= (dilated.argmax(1) == fp32.argmax(1)).double().mean() - 0.002
    assert (ours - fp32).abs().max() <= 2 * (dilated - fp32).abs().max()
