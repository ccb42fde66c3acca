"""torchvision's layouts and forward passes, written from its published module structure — ``resnet.py``'s
``Bottleneck``/``BasicBlock``/``_make_layer``, ``mobilenetv3.py``'s ``InvertedResidual``/``_mobilenet_v3_conf``,
``vgg.py``'s ``cfgs["D"]``, ``segmentation/deeplabv3.py``'s ``DeepLabHead``/``ASPP``/``_deeplabv3_mobilenetv3``
and ``fcn.py``'s ``FCNHead`` — never from our model: torchvision itself cannot be imported in this
environment, so this is the independent reference the weights tests compare against."""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


# depth -> (block, units per stage): torchvision's resnet18/34/50/101
RESNET_LAYOUT = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                 50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
STAGE_PLANES = (64, 128, 256, 512)
ASPP_RATES = (12, 24, 36)  # torchvision's DeepLabHead(2048, num_classes) → ASPP(2048, [12, 24, 36])
Shapes = dict[str, tuple[int, ...]]


def _conv(keys: Shapes, name: str, out: int, inp: int, kernel: int, bias: bool = False) -> None:
    keys[f"{name}.weight"] = (out, inp, kernel, kernel)
    if bias:
        keys[f"{name}.bias"] = (out,)


def _bn(keys: Shapes, name: str, channels: int) -> None:
    for kind in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{name}.{kind}"] = (channels,)
    keys[f"{name}.num_batches_tracked"] = ()


def torchvision_resnet_keys(depth: int, prefix: str = "") -> Shapes:
    """torchvision ``resnet{depth}`` without ``avgpool``/``fc``: stem, then ``_make_layer`` per stage, where
    unit 0 gets ``downsample = Sequential(conv1x1, BN)`` iff ``stride != 1 or inplanes != planes * expansion``."""
    block, layers = RESNET_LAYOUT[depth]
    expansion = 4 if block == "bottleneck" else 1
    keys: Shapes = {}
    _conv(keys, f"{prefix}conv1", 64, 3, 7)
    _bn(keys, f"{prefix}bn1", 64)
    inplanes = 64
    for stage, (planes, units) in enumerate(zip(STAGE_PLANES, layers), start=1):
        stride = 1 if stage == 1 else 2  # nominal; dilation changes no key
        out = planes * expansion
        for unit in range(units):
            p = f"{prefix}layer{stage}.{unit}"
            if block == "bottleneck":  # conv1 1x1, conv2 3x3, conv3 1x1 (x4), width = planes (groups=1)
                _conv(keys, f"{p}.conv1", planes, inplanes, 1)
                _bn(keys, f"{p}.bn1", planes)
                _conv(keys, f"{p}.conv2", planes, planes, 3)
                _bn(keys, f"{p}.bn2", planes)
                _conv(keys, f"{p}.conv3", out, planes, 1)
                _bn(keys, f"{p}.bn3", out)
            else:  # BasicBlock: two 3x3 convs
                _conv(keys, f"{p}.conv1", planes, inplanes, 3)
                _bn(keys, f"{p}.bn1", planes)
                _conv(keys, f"{p}.conv2", planes, planes, 3)
                _bn(keys, f"{p}.bn2", planes)
            if unit == 0 and (stride != 1 or inplanes != out):
                _conv(keys, f"{p}.downsample.0", out, inplanes, 1)
                _bn(keys, f"{p}.downsample.1", out)
            inplanes = out
    return keys


def torchvision_imagenet_resnet_keys(depth: int) -> Shapes:
    """A torchvision ImageNet classifier file (``resnet50-0676ba61.pth``): the ResNet plus ``fc``."""
    keys = torchvision_resnet_keys(depth)
    features = 2048 if RESNET_LAYOUT[depth][0] == "bottleneck" else 512
    keys["fc.weight"], keys["fc.bias"] = (1000, features), (1000,)
    return keys


def torchvision_deeplabv3_keys(depth: int, num_classes: int = 21, aux: bool = True) -> Shapes:
    """Every key and shape of torchvision's ``deeplabv3_resnet{depth}`` state dict."""
    keys = torchvision_resnet_keys(depth, "backbone.")
    keys.update(torchvision_head_keys(2048, num_classes, 1024 if aux else None))
    return keys


def torchvision_head_keys(in_channels: int, num_classes: int, aux_channels: int | None) -> Shapes:
    """``classifier = DeepLabHead(in) = Sequential(ASPP, Conv3x3(256, 256), BN, ReLU, Conv1x1(256, classes))``;
    ``ASPP.convs = [Seq(conv1x1, BN, ReLU), 3 × ASPPConv = Seq(conv3x3, BN, ReLU),
    ASPPPooling = Seq(AdaptiveAvgPool2d, conv1x1, BN, ReLU)]``, ``ASPP.project = Seq(Conv1x1(1280, 256), BN,
    ReLU, Dropout)``; ``aux_classifier = FCNHead(aux) = Seq(Conv3x3(aux, aux // 4), BN, ReLU, Dropout, Conv1x1)``.
    """
    keys: Shapes = {}
    aspp = "classifier.0"
    _conv(keys, f"{aspp}.convs.0.0", 256, in_channels, 1)
    _bn(keys, f"{aspp}.convs.0.1", 256)
    for branch in (1, 2, 3):
        _conv(keys, f"{aspp}.convs.{branch}.0", 256, in_channels, 3)
        _bn(keys, f"{aspp}.convs.{branch}.1", 256)
    _conv(keys, f"{aspp}.convs.4.1", 256, in_channels, 1)  # index 0 is the pooling layer (no parameters)
    _bn(keys, f"{aspp}.convs.4.2", 256)
    _conv(keys, f"{aspp}.project.0", 256, 5 * 256, 1)
    _bn(keys, f"{aspp}.project.1", 256)
    _conv(keys, "classifier.1", 256, 256, 3)
    _bn(keys, "classifier.2", 256)
    _conv(keys, "classifier.4", num_classes, 256, 1, bias=True)
    if aux_channels:
        _conv(keys, "aux_classifier.0", aux_channels // 4, aux_channels, 3)
        _bn(keys, "aux_classifier.1", aux_channels // 4)
        _conv(keys, "aux_classifier.4", num_classes, aux_channels // 4, 1, bias=True)
    return keys


def parameter_count(shapes: Shapes) -> int:
    """Learnable parameters: every tensor but BN running statistics and ``num_batches_tracked``."""
    return sum(math.prod(shape) for key, shape in shapes.items() if not key.endswith(BN_STATS))


def random_state(shapes: Shapes, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors of ``shapes`` that keep activations O(1): He-scaled conv weights, positive running
    variances, small BN offsets; the last BN of each residual branch is damped so depth does not blow up."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.empty(shape).uniform_(0.5, 1.5, generator=generator)
        elif key.endswith("running_mean") or (key.endswith(".bias") and len(shape) == 1):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # BN weight
            low, high = (0.2, 0.4) if re.search(r"\.bn[23]\.weight$|downsample\.1\.weight$", key) else (0.5, 1.5)
            state[key] = torch.empty(shape).uniform_(low, high, generator=generator)
        else:  # conv (4-d) or fc (2-d) weight
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
    return state


def meta_state(shapes: Shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta", dtype=torch.long if k.endswith("num_batches_tracked") else None)
            for k, s in shapes.items()}


def shapes_of(state: dict[str, torch.Tensor]) -> Shapes:
    return {k: tuple(v.shape) for k, v in state.items()}


def torchvision_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, depth: int = 50
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``deeplabv3_resnet{depth}`` eval forward in ``torch.nn.functional`` only: returns
    ``(result["out"], result["aux"])``.

    Backbone: ``replace_stride_with_dilation=[False, True, True]``; in ``_make_layer(dilate=True)``:
    ``previous_dilation = self.dilation; self.dilation *= stride; stride = 1``; unit 0 uses
    ``previous_dilation``, the others ``self.dilation``; 3x3 padding = dilation; downsample has the stride.
    """
    bn, conv = _bn_fn(sd), _conv_fn(sd)
    _, layers = RESNET_LAYOUT[depth]
    h = F.relu(bn(conv(x, "backbone.conv1", 2, 3), "backbone.bn1"))
    h = F.max_pool2d(h, 3, 2, 1)
    dilation = 1
    for stage, (units, stride, dilate) in enumerate(zip(layers, (1, 2, 2, 2), (False, False, True, True)), 1):
        previous_dilation = dilation
        if dilate:
            dilation *= stride
            stride = 1
        for unit in range(units):
            p = f"backbone.layer{stage}.{unit}"
            s, d = (stride, previous_dilation) if unit == 0 else (1, dilation)
            out = F.relu(bn(conv(h, f"{p}.conv1"), f"{p}.bn1"))
            out = F.relu(bn(conv(out, f"{p}.conv2", s, d, d), f"{p}.bn2"))
            out = bn(conv(out, f"{p}.conv3"), f"{p}.bn3")
            identity = bn(conv(h, f"{p}.downsample.0", s), f"{p}.downsample.1") \
                if f"{p}.downsample.0.weight" in sd else h
            h = F.relu(out + identity)
        if stage == 3:
            aux_features = h
    return torchvision_heads(sd, h, aux_features, x.shape[-2:])


def _bn_fn(sd: dict[str, torch.Tensor], eps: float = 1e-5):
    def bn(t, name):
        return F.batch_norm(t, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                            sd[f"{name}.bias"], training=False, momentum=0.1, eps=eps)
    return bn


def _conv_fn(sd: dict[str, torch.Tensor]):
    def conv(t, name, stride=1, padding=0, dilation=1, groups=1):
        return F.conv2d(t, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride, padding, dilation, groups)
    return conv


def torchvision_heads(sd: dict[str, torch.Tensor], h: torch.Tensor, aux_features: torch.Tensor,
                      size) -> tuple[torch.Tensor, torch.Tensor]:
    """``DeepLabHead`` on ``h`` and ``FCNHead`` on ``aux_features``, both upsampled to ``size`` (eval mode)."""
    bn, conv = _bn_fn(sd), _conv_fn(sd)
    a = "classifier.0"
    branches = [F.relu(bn(conv(h, f"{a}.convs.0.0"), f"{a}.convs.0.1"))]
    for branch, rate in enumerate(ASPP_RATES, start=1):
        branches.append(F.relu(bn(conv(h, f"{a}.convs.{branch}.0", 1, rate, rate), f"{a}.convs.{branch}.1")))
    pooled = F.relu(bn(conv(F.adaptive_avg_pool2d(h, 1), f"{a}.convs.4.1"), f"{a}.convs.4.2"))
    branches.append(F.interpolate(pooled, size=h.shape[-2:], mode="bilinear", align_corners=False))
    y = F.relu(bn(conv(torch.cat(branches, 1), f"{a}.project.0"), f"{a}.project.1"))  # Dropout: eval no-op
    y = F.relu(bn(conv(y, "classifier.1", 1, 1), "classifier.2"))
    out = F.interpolate(conv(y, "classifier.4"), size=size, mode="bilinear", align_corners=False)
    if "aux_classifier.0.weight" not in sd:
        return out, None
    z = F.relu(bn(conv(aux_features, "aux_classifier.0", 1, 1), "aux_classifier.1"))
    aux = F.interpolate(conv(z, "aux_classifier.4"), size=size, mode="bilinear", align_corners=False)
    return out, aux


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1.0)).item()


# --- MobileNetV3-Large (mobilenetv3.py: _mobilenet_v3_conf("mobilenet_v3_large", dilated=True)) -----------------

# (input, kernel, expanded, output, use_se, activation, stride) per inverted residual, as torchvision lists them.
MOBILENET_V3_LARGE = [
    (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
]
DILATED_FROM = 12  # dilated=True: the last three units (C4) run at dilation 2, the strided one at stride 1
MOBILENET_V3_EPS = 0.001  # norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def _divisible(value: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def torchvision_mobilenet_v3_keys(prefix: str = "backbone.") -> Shapes:
    """``features`` of ``mobilenet_v3_large``: ``0`` the stem, ``1``..``15`` ``InvertedResidual.block``
    (``[expand Conv2dNormActivation] depthwise Conv2dNormActivation [SqueezeExcitation fc1/fc2] project``),
    ``16`` the 1×1 conv to 960. The DeepLab files keep them right under ``backbone.``."""
    keys: Shapes = {}
    _conv(keys, f"{prefix}0.0", 16, 3, 3)
    _bn(keys, f"{prefix}0.1", 16)
    for index, (cin, kernel, expanded, out, se, _, _) in enumerate(MOBILENET_V3_LARGE, start=1):
        p, j = f"{prefix}{index}.block", 0
        if expanded != cin:
            _conv(keys, f"{p}.0.0", expanded, cin, 1)
            _bn(keys, f"{p}.0.1", expanded)
            j = 1
        keys[f"{p}.{j}.0.weight"] = (expanded, 1, kernel, kernel)
        _bn(keys, f"{p}.{j}.1", expanded)
        j += 1
        if se:
            squeezed = _divisible(expanded // 4)
            _conv(keys, f"{p}.{j}.fc1", squeezed, expanded, 1, bias=True)
            _conv(keys, f"{p}.{j}.fc2", expanded, squeezed, 1, bias=True)
            j += 1
        _conv(keys, f"{p}.{j}.0", out, expanded, 1)
        _bn(keys, f"{p}.{j}.1", out)
    _conv(keys, f"{prefix}16.0", 960, 160, 1)
    _bn(keys, f"{prefix}16.1", 960)
    return keys


def torchvision_deeplabv3_mobilenet_v3_keys(num_classes: int = 21, aux: bool = True) -> Shapes:
    """``deeplabv3_mobilenet_v3_large``: the out head on features[16] (960 ch), the aux head on features[4] —
    ``stage_indices[-4]`` of ``_deeplabv3_mobilenetv3``, the unit that strides into 1/8 (40 ch)."""
    keys = torchvision_mobilenet_v3_keys()
    keys.update(torchvision_head_keys(960, num_classes, 40 if aux else None))
    return keys


def torchvision_mobilenet_v3_forward(sd: dict[str, torch.Tensor], x: torch.Tensor
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``deeplabv3_mobilenet_v3_large`` eval forward in ``torch.nn.functional`` only."""
    bn, conv = _bn_fn(sd, MOBILENET_V3_EPS), _conv_fn(sd)
    h = F.hardswish(bn(conv(x, "backbone.0.0", 2, 1), "backbone.0.1"))
    for index, (cin, kernel, expanded, out, se, act, stride) in enumerate(MOBILENET_V3_LARGE, start=1):
        dilation = 2 if index > DILATED_FROM else 1
        stride = 1 if dilation > 1 else stride
        activation = F.hardswish if act == "HS" else F.relu
        p, j, y = f"backbone.{index}.block", 0, h
        if expanded != cin:
            y = activation(bn(conv(y, f"{p}.0.0"), f"{p}.0.1"))
            j = 1
        y = activation(bn(conv(y, f"{p}.{j}.0", stride, (kernel - 1) // 2 * dilation, dilation, expanded),
                          f"{p}.{j}.1"))
        j += 1
        if se:
            scale = F.relu(conv(F.adaptive_avg_pool2d(y, 1), f"{p}.{j}.fc1"))
            y = y * F.hardsigmoid(conv(scale, f"{p}.{j}.fc2"))
            j += 1
        y = bn(conv(y, f"{p}.{j}.0"), f"{p}.{j}.1")
        h = y + h if stride == 1 and cin == out else y
        if index == 4:
            aux_features = h
    h = F.hardswish(bn(conv(h, "backbone.16.0"), "backbone.16.1"))
    return torchvision_heads(sd, h, aux_features, x.shape[-2:])


# --- VGG-16 (vgg.py: cfgs["D"] = [64, 64, "M", 128, 128, "M", 256 ×3, "M", 512 ×3, "M", 512 ×3, "M"]) -------

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def torchvision_vgg16_keys() -> Shapes:
    """``vgg16()``: ``features`` (conv + ReLU per number, a max-pool per "M", indices counting both) and the
    ``classifier`` (Linear 25088→4096, ReLU, Dropout, Linear 4096→4096, ReLU, Dropout, Linear 4096→1000)."""
    keys: Shapes = {}
    index, channels = 0, 3
    for item in VGG16_CFG:
        if item == "M":
            index += 1
            continue
        _conv(keys, f"features.{index}", item, channels, 3, bias=True)
        channels, index = item, index + 2
    for name, (out, inp) in (("classifier.0", (4096, 512 * 7 * 7)), ("classifier.3", (4096, 4096)),
                             ("classifier.6", (1000, 4096))):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (out, inp), (out,)
    return keys
