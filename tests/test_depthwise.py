"""Depthwise convolutions train in fp32 under CPU bf16 autocast (oneDNN's bf16 depthwise backward is the slow
kernel): the arithmetic is fp32's rounded once to bf16, the gradients fp32's, and inference keeps the bf16
kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from deeplab.data.io import read_image
from deeplab.data.normalization import IMAGENET
from deeplab.models.atrous import AtrousConv2d
from deeplab.models.depthwise import Conv2d


@pytest.fixture(scope="module")
def frame(shared_data) -> torch.Tensor:
    """A real CamVid frame at quarter size, normalised, as 3 channels to convolve depthwise."""
    path = sorted((shared_data / "camvid" / "val").glob("*.png"))[0]
    image = np.asarray(Image.fromarray(read_image(path)).resize((120, 90), Image.BILINEAR))
    return IMAGENET.to_tensor(image).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("conv_type, stride, dilation", [(Conv2d, 2, 1), (Conv2d, 1, 2), (AtrousConv2d, 1, 4)])
def test_a_depthwise_convolution_trains_in_fp32_under_bf16_autocast(frame, conv_type, stride, dilation) -> None:
    torch.manual_seed(0)
    conv = conv_type(3, 3, 3, stride, padding=dilation, dilation=dilation, groups=3, bias=True)
    x = frame.clone().requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.bfloat16
    reference = F.conv2d(frame, conv.weight, conv.bias, stride, dilation, dilation, 3)
    assert torch.equal(out, reference.to(torch.bfloat16))  # fp32 arithmetic, rounded once
    out.float().square().sum().backward()
    x_ref = frame.clone().requires_grad_(True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    F.conv2d(x_ref, weight, conv.bias.detach(), stride, dilation, dilation, 3).to(torch.bfloat16).float() \
        .square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, weight.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_inference_and_dense_convolutions_keep_autocasts_bf16_kernel(frame) -> None:
    torch.manual_seed(0)
    depthwise = Conv2d(3, 3, 3, padding=1, groups=3)
    dense = Conv2d(3, 8, 3, padding=1)
    with torch.autocast("cpu", torch.bfloat16):
        with torch.no_grad():  # inference: the bf16 kernel, as plain autocast runs it
            assert torch.equal(depthwise(frame), F.conv2d(frame, depthwise.weight, depthwise.bias, 1, 1, 1, 3))
        assert torch.equal(dense(frame), F.conv2d(frame, dense.weight, dense.bias, 1, 1))  # not depthwise
    assert torch.equal(depthwise(frame), F.conv2d(frame, depthwise.weight, depthwise.bias, 1, 1, 1, 3))  # fp32


def test_the_backbones_depthwise_layers_are_the_fp32_training_kind() -> None:
    from deeplab.models import deeplabv3

    for backbone in ("mobilenet_v2", "mobilenet_v3_large", "xception65"):
        model = deeplabv3(backbone=backbone, num_classes=3)
        depthwise = [m for m in model.modules()
                     if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
        assert depthwise and all(isinstance(m, Conv2d) for m in depthwise), backbone
