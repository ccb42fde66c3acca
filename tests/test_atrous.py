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
