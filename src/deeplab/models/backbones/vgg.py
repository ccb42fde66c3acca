"""VGG-16 (arXiv:1409.1556), the backbone of DeepLab v1 and v2, with atrous output stride.

Parameter names are torchvision's ``vgg16().features`` (``features.0`` conv1_1 … ``features.28`` conv5_3; the
ReLUs and pools keep their indices), so a torchvision ``vgg16-*.pth`` ImageNet file loads into it (its
``classifier.*`` — fc6/fc7 as fully connected layers — is not used: DeepLab's fc6/fc7 are convolutions of the
head). Pools are DeepLab's 3×3 with padding 1: stride 2 while the running stride is below the output stride,
stride 1 after it (the LargeFOV recipe: pool4 and pool5 at stride 1 for output stride 8), and every conv after
a pool that gave up its stride is dilated by the stride given up (conv5 at rate 2 for output stride 8).
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import Backbone, FeatureInfo, check_output_stride, init_weights, plan_stages, set_conv_geometry

# (convs, channels) per block: conv1_x … conv5_x.
BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# A stage is the pool before a block and the block; stage 0 has no pool, stage 5 is pool5 alone.
STAGE_STRIDES = (1, 2, 2, 2, 2, 2)
LOW_LEVEL_BLOCK = 2  # conv3_x: the first block at stride 4
AUX_BLOCK = 3  # conv4_x: stride 8


class VGG16Backbone(Backbone):
    """``features.0`` .. ``features.30`` of torchvision's VGG-16, returning low-level, aux and out maps."""

    def __init__(self, *, output_stride: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.block_ends: list[int] = []  # index of each block's last ReLU
        self.pools: list[nn.MaxPool2d] = []
        self.block_convs: list[list[nn.Conv2d]] = []
        channels = 3
        for block, (convs, width) in enumerate(BLOCKS):
            if block:  # pool1 .. pool4 open blocks 2 .. 5
                self.pools.append(nn.MaxPool2d(3, 2, 1))
                layers.append(self.pools[-1])
            self.block_convs.append([])
            for _ in range(convs):
                conv = nn.Conv2d(channels, width, 3, padding=1)
                layers += [conv, nn.ReLU(inplace=True)]
                self.block_convs[-1].append(conv)
                channels = width
            self.block_ends.append(len(layers) - 1)
        self.pools.append(nn.MaxPool2d(3, 2, 1))  # pool5
        layers.append(self.pools[-1])
        self.features = nn.Sequential(*layers)  # torchvision's name and indices, kept so its files load
        self.channels_of = {"low_level": BLOCKS[LOW_LEVEL_BLOCK][1], "aux": BLOCKS[AUX_BLOCK][1], "out": channels}
        init_weights(self)
        self.set_output_stride(output_stride)

    def set_output_stride(self, output_stride: int) -> None:
        """Re-plan the pools' strides and the convs' dilations in place; parameters are unchanged."""
        check_output_stride(output_stride)
        plans = plan_stages(STAGE_STRIDES, output_stride)
        reductions, running = [], 1
        for stage, plan in enumerate(plans):
            if stage:
                pool = self.pools[stage - 1]
                pool.stride = plan.stride
            for conv in self.block_convs[stage] if stage < len(BLOCKS) else []:
                set_conv_geometry(conv, 1, plan.dilation)
            running *= plan.stride
            reductions.append(running)
        self.output_stride = output_stride
        self.feature_info = [FeatureInfo("low_level", self.channels_of["low_level"], reductions[LOW_LEVEL_BLOCK]),
                             FeatureInfo("aux", self.channels_of["aux"], reductions[AUX_BLOCK]),
                             FeatureInfo("out", self.channels_of["out"], reductions[-1])]

    @property
    def conv_dilations(self) -> list[list[int]]:
        """The dilation each conv of each block applies now (what the tests check)."""
        return [[conv.dilation[0] for conv in convs] for convs in self.block_convs]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        ends = {self.block_ends[LOW_LEVEL_BLOCK]: "low_level", self.block_ends[AUX_BLOCK]: "aux"}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in ends:
                features[ends[index]] = x
        features["out"] = x
        return features
