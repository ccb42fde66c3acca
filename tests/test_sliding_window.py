"""Sliding-window inference: window origins that cover each axis, exactness when the tile holds the image, a
local model equal to the full pass in window interiors, bounded window batches, and a trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deeplab.data.io import read_image
from deeplab.data.normalization import IMAGENET, SIGNED_UNIT
from deeplab.inference import Predictor
from deeplab.inference.tta import predict_probabilities, window_starts
from inference_fixtures import ROUNDING, Recorder


def test_window_origins_cover_the_axis() -> None:
    assert window_starts(50, 64, 43) == [0]
    assert window_starts(64, 64, 43) == [0]
    assert window_starts(100, 64, 43) == [0, 36]
    assert window_starts(200, 64, 43) == [0, 34, 68, 102, 136]  # steps of at most 43, evenly spread
    for size, tile, stride in ((97, 32, 21), (513, 129, 86), (65, 64, 1)):
        starts = window_starts(size, tile, stride)
        assert starts[0] == 0 and starts[-1] == size - tile
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))  # overlap at least as asked
        covered = np.zeros(size, bool)
        for start in starts:
            covered[start:start + tile] = True
        assert covered.all()


@pytest.mark.parametrize("options", [{}, {"flip": True, "scales": (0.5, 1.0)}])
def test_tile_larger_than_image_is_exactly_untiled(model, images, options) -> None:
    x = IMAGENET.to_tensor(images["camvid_96x72"])  # 72×96; the largest scaled pass is 72×96
    untiled = predict_probabilities(model, x, **options)
    assert torch.equal(predict_probabilities(model, x, tile=96, **options), untiled)
    assert torch.equal(predict_probabilities(model, x, tile=500, **options), untiled)


def _interior(height: int, width: int, tile: int, overlap: float, margin: int) -> np.ndarray:
    """Pixels at least ``margin`` away from every window border that is not a border of the image; a
    zero-padded image edge counts as a window border (the model sees padding, not its own zero padding)."""
    stride = max(1, round(tile * (1 - overlap)))
    padded_h, padded_w = max(height, tile), max(width, tile)
    touched = np.zeros((padded_h, padded_w), bool)

    def spans(size: int, padded: int) -> list[tuple[int, int, int, int]]:
        out = []
        for start in window_starts(padded, tile, stride):
            end = start + tile
            lo = 0 if start == 0 else margin  # an image border needs no margin
            hi = tile if end == padded == size else min(tile, size - start) - margin
            out.append((start, end, lo, hi))
        return out

    for top, bottom, t0, t1 in spans(height, padded_h):
        for left, right, l0, l1 in spans(width, padded_w):
            inner = np.zeros((tile, tile), bool)
            inner[t0:max(t0, t1), l0:max(l0, l1)] = True
            touched[top:bottom, left:right] |= ~inner
    return ~touched[:height, :width]


@pytest.mark.parametrize("size", [(96, 128), (40, 150), (150, 40)])
def test_tiled_local_model_equals_full_in_window_interiors(size) -> None:
    """A model whose receptive field is 5×5 (two 3×3 convs): away from window borders a window sees all
    the input its output depends on, so tiled and full results must agree to float rounding there —
    including across the zero-padded dimension of an image thinner than the tile."""
    torch.manual_seed(0)
    local = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1)).eval()
    x = torch.randn(2, 3, *size)
    full = predict_probabilities(local, x)
    tiled = predict_probabilities(local, x, tile=64, tile_overlap=1 / 3, window_batch_size=3)
    assert tiled.shape == full.shape
    mask = torch.from_numpy(_interior(*size, tile=64, overlap=1 / 3, margin=2))
    assert mask.float().mean() > 0.8
    difference = (full - tiled).abs().amax(dim=(0, 1))
    assert difference[mask].max() < 1e-6
    assert difference[~mask].max() > 1e-3  # windows really were cut there


def test_windows_run_in_bounded_batches(mobilenet, images) -> None:
    x = IMAGENET.to_tensor(images["camvid_96x72"][:2])  # 72×96, tile 40, step ≤ 27: 3×4 windows per image
    recorder = Recorder(mobilenet)
    tiled = predict_probabilities(recorder, x, tile=40, window_batch_size=4)
    assert all(shape[0] <= 4 and shape[-2:] == (40, 40) for shape in recorder.shapes)
    assert sum(shape[0] for shape in recorder.shapes) == 2 * 3 * 4
    one_by_one = predict_probabilities(mobilenet, x, tile=40, window_batch_size=1)
    torch.testing.assert_close(tiled, one_by_one, rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("size", [(72, 96), (30, 96), (96, 30)])
def test_tiled_deeplab_shapes(model, images, size) -> None:
    batch = [np.asarray(Image.fromarray(im).resize(size[::-1], Image.BILINEAR)) for im in images["camvid_96x72"][:2]]
    x = IMAGENET.to_tensor(batch)
    probs = predict_probabilities(model, x, tile=48, flip=True)
    assert probs.shape == (2, model.config["num_classes"], *size)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(2, *size), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_tiled_trained_model_agrees_with_full_image(shared_data, voc_paths) -> None:
    """With real weights (the authors' VOC model) 321-pixel windows give nearly the full-image labels."""
    pytest.importorskip("tflite")
    from deeplab.weights.tflite import load_tflite

    model = load_tflite(shared_data / "weights" / "deeplabv3_257_mv_gpu.tflite")
    predictor = Predictor(model, normalization=SIGNED_UNIT, return_probabilities=False)
    tiled = Predictor(model, normalization=SIGNED_UNIT, tile=321, return_probabilities=False)
    chosen = [read_image(p) for p in voc_paths[2:4]]  # 500×375 and 441×500
    for full, windows in zip(predictor.predict(chosen), tiled.predict(chosen)):
        assert windows.labels.shape == full.labels.shape
        assert (windows.labels == full.labels).mean() > 0.9
        assert len(set(np.unique(full.labels))) > 1  # not a trivial all-background map
