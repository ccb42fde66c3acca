"""Bounded-memory sliding windows: the streamed labels and probabilities equal the in-memory sliding window's bit
for bit (with and without flip; thin, wide and tall images, where the circular band wraps and regrows), the
band never grows with the image height, large images tile on their own and say so once, multi-scale above the
budget is refused, huge JPEGs can be decoded reduced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab.data.io import read_image
from deeplab.data.normalization import IMAGENET
from deeplab.inference import Predictor
from deeplab.inference import streaming
from deeplab.inference.streaming import open_probability_file, stream_labels
from deeplab.inference.tta import predict_probabilities


def _photo(shared_data: Path, size: tuple[int, int]) -> np.ndarray:
    """A real CamVid frame resized to (W, H)."""
    path = sorted((shared_data / "camvid" / "val").glob("*.png"))[4]
    return np.asarray(Image.fromarray(read_image(path)).resize(size, Image.BILINEAR))


@pytest.mark.parametrize("size, flip", [((200, 130), False), ((200, 130), True), ((45, 170), True),
                                        ((170, 45), False), ((60, 50), True), ((80, 400), True)])
def test_streamed_windows_equal_the_in_memory_sliding_window(mobilenet, shared_data, size, flip) -> None:
    image = _photo(shared_data, size)
    x = IMAGENET.to_tensor(image)
    expected = predict_probabilities(mobilenet, x, tile=64, flip=flip, window_batch_size=3)[0]
    probabilities = np.empty(tuple(expected.shape), np.float32)
    with torch.inference_mode():
        labels = stream_labels(mobilenet, image, IMAGENET, 64, flip=flip, window_batch_size=3,
                               probabilities_out=probabilities)
    assert labels.dtype == np.uint8 and labels.shape == image.shape[:2]
    np.testing.assert_array_equal(probabilities, expected.numpy())  # the same sums in the same order
    np.testing.assert_array_equal(labels, expected.argmax(0).numpy())
    assert len(np.unique(labels)) > 1


def test_the_band_is_bounded_by_the_tile_not_the_height(mobilenet, shared_data, monkeypatch, tmp_path) -> None:
    rows_seen = []
    real = streaming._ensure_rows

    def spy(p, base, rows, classes, width, capacity, device):
        real(p, base, rows, classes, width, capacity, device)
        rows_seen.append(p.band.shape[1])

    monkeypatch.setattr(streaming, "_ensure_rows", spy)
    for height in (200, 600):
        rows_seen.clear()
        with torch.inference_mode():
            stream_labels(mobilenet, _photo(shared_data, (96, height)), IMAGENET, 64, window_batch_size=2)
        assert max(rows_seen) <= 64 + 2 * 43  # tile + two steps, whatever the height
    big = _photo(shared_data, (80, 300))
    out = open_probability_file(tmp_path / "probs.npy", 4, *big.shape[:2])
    with torch.inference_mode():
        labels = stream_labels(mobilenet, big, IMAGENET, 64, probabilities_out=out)
    out.flush()
    back = np.load(tmp_path / "probs.npy", mmap_mode="r")
    assert back.dtype == np.float16 and back.shape == (4, 300, 80)
    assert (np.asarray(back).argmax(0) == labels).mean() > 0.99  # float16 storage may flip exact ties only


def test_predictor_tiles_large_images_on_its_own_and_says_so_once(mobilenet, shared_data) -> None:
    told = []
    predictor = Predictor(mobilenet, normalization=IMAGENET, tile_above=100 * 100, notify=told.append,
                          channels_last=False)
    small, large = _photo(shared_data, (90, 60)), _photo(shared_data, (300, 220))
    results = predictor.predict([small, large, large])
    assert results[0].labels.dtype == np.int64 and results[1].labels.dtype == np.uint8
    assert len(told) == 1 and "513x513 windows" in told[0]
    expected = predict_probabilities(mobilenet, IMAGENET.to_tensor(large), tile=513)[0]
    np.testing.assert_array_equal(results[1].labels, expected.argmax(0).numpy())
    np.testing.assert_array_equal(results[1].probabilities, expected.numpy())
    with pytest.raises(ValueError, match="above the 10,000-pixel tiling budget and multi-scale"):
        Predictor(mobilenet, normalization=IMAGENET, tile_above=100 * 100, scales=(0.5, 1.0)).predict([large])
    explicit = Predictor(mobilenet, normalization=IMAGENET, tile=64, tile_above=None, return_probabilities=False)
    assert explicit.streams(small) and explicit.predict([small])[0].labels.dtype == np.uint8


def test_huge_jpegs_decode_reduced_when_a_smaller_size_is_asked(tmp_path: Path, shared_data) -> None:
    photo = _photo(shared_data, (4000, 3000))
    path = tmp_path / "big.jpg"
    Image.fromarray(photo).save(path, quality=90)
    assert read_image(path).shape == (3000, 4000, 3)
    assert read_image(path, size_hint=(900, 700)).shape == (750, 1000, 3)  # DCT-scaled by 4, still >= the hint
    with pytest.raises(ValueError, match="exceeds the limit of 1,000,000"):
        read_image(path, max_pixels=1_000_000)
    assert read_image(path, max_pixels=1_000_000, size_hint=(500, 400)).shape == (750, 1000, 3)
