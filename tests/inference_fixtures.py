"""Shared by the inference tests (registered in ``conftest.py``): small real images in three sizes, and
small seeded models that are *calibrated*.

A freshly initialised MobileNetV2 with default batch-norm statistics gives a spatially constant output (all
activations saturate), which would make flip, bucketing and tiling tests pass vacuously. So the batch-norm
running statistics are estimated on real images first (one train-mode pass, cumulative average) and the
classifier is scaled up so that class maps are varied and argmax is not decided by float rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deeplab.data.io import read_image
from deeplab.data.normalization import IMAGENET, Normalization
from deeplab.models import deeplabv3


def _resized(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A real image, resized (W, H) with PIL bilinear: H×W×3 uint8."""
    return np.asarray(Image.fromarray(read_image(path)).resize(size, Image.BILINEAR)).copy()


@pytest.fixture(scope="module")
def voc_paths(shared_data: Path) -> list[Path]:
    paths = sorted((shared_data / "voc2012_val_dev" / "JPEGImages").glob("*.jpg"))
    assert len(paths) >= 6
    return paths


@pytest.fixture(scope="module")
def images(shared_data: Path, voc_paths: list[Path]) -> dict[str, list[np.ndarray]]:
    """Small real images in three sizes: VOC at 80×60 and 64×48 (W×H), CamVid at 96×72."""
    camvid = sorted((shared_data / "camvid" / "val").glob("*.png"))[:3]
    assert len(camvid) == 3
    return {
        "voc_80x60": [_resized(p, (80, 60)) for p in voc_paths[:4]],
        "voc_64x48": [_resized(p, (64, 48)) for p in voc_paths[4:6]],
        "camvid_96x72": [_resized(p, (96, 72)) for p in camvid],
    }


def calibrated(model: nn.Module, batch: torch.Tensor, sharpen: float = 8.0) -> nn.Module:
    """Estimate batch-norm statistics on ``batch`` and scale the final classifier conv by ``sharpen``."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(batch)
    last = [m for m in model.classifier.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(sharpen)
        if last.bias is not None:
            last.bias.mul_(sharpen)
    return model.eval()


def build(backbone: str, images: dict[str, list[np.ndarray]], *, num_classes: int = 4, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    extra = {"width_mult": 0.5} if backbone == "mobilenet_v2" else {}
    model = deeplabv3(backbone=backbone, num_classes=num_classes, **extra, **kwargs)
    return calibrated(model, IMAGENET.to_tensor(images["voc_80x60"]))


@pytest.fixture(scope="module")
def mobilenet(images) -> nn.Module:
    return build("mobilenet_v2", images, num_classes=4)


@pytest.fixture(scope="module")
def resnet(images) -> nn.Module:
    return build("resnet18", images, num_classes=3)


@pytest.fixture(params=["mobilenet", "resnet"])
def model(request) -> nn.Module:
    return request.getfixturevalue(request.param)


# Batched vs single-image convolutions (and channels-last vs contiguous) round differently: through ~50
# layers with calibrated batch norm the logits differ by up to ~3e-4 (relative ~3e-5), probabilities by
# up to ~7e-5 — measured on these models. Results that are "equal" are compared at this tolerance; every
# comparison that must be bit-exact (same computation) uses torch.equal.
ROUNDING = 2e-4


def reference(model: nn.Module, image: np.ndarray, normalization: Normalization = IMAGENET) -> torch.Tensor:
    """Softmax of one plain forward pass on one image: the ground truth the engine must reproduce."""
    with torch.no_grad():
        return torch.softmax(model.eval()(normalization.to_tensor(image)), dim=1)[0]


def assert_same_labels(labels: np.ndarray, probabilities: torch.Tensor, margin: float = 1e-3) -> None:
    """Labels equal the argmax of ``probabilities`` except where the top two are within float-rounding
    distance (batched and single convolutions round differently at ~1e-7)."""
    top2 = probabilities.topk(2, dim=0).values
    decided = (top2[0] - top2[1] > margin).numpy()
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(labels[decided], probabilities.argmax(0).numpy()[decided])


class Recorder:
    """A backend that forwards to a model and records the input shape of every call."""

    def __init__(self, model: nn.Module, as_numpy: bool = False) -> None:
        self.model, self.as_numpy, self.shapes = model, as_numpy, []

    def __call__(self, x: torch.Tensor):
        self.shapes.append(tuple(x.shape))
        out = self.model(x)
        return out.numpy() if self.as_numpy else out
