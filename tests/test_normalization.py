"""Pixel normalisation: known values of the two presets, tensor layouts, bad input, and one implementation behind
training's transform, inference's tensors and the exported graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeplab.data.normalization import IMAGENET, SIGNED_UNIT, Normalization


def test_presets_known_values() -> None:
    pixel = np.array([[[255, 0, 128]]], dtype=np.uint8)
    x = IMAGENET.to_tensor(pixel)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert x.shape == (1, 3, 1, 1) and x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor(expected), rtol=0, atol=1e-6)
    ramp = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 256, 3)
    signed = SIGNED_UNIT.to_tensor(ramp)
    torch.testing.assert_close(signed[0, :, 0], torch.arange(256.0).div(127.5).sub(1).expand(3, -1), rtol=0, atol=1e-6)
    assert signed.min() == -1 and signed.max() == 1


def test_to_tensor_layouts(images) -> None:
    batch = images["voc_80x60"]
    from_list = IMAGENET.to_tensor(batch)
    assert from_list.shape == (4, 3, 60, 80) and from_list.is_contiguous()
    assert torch.equal(from_list, IMAGENET.to_tensor(np.stack(batch)))
    assert torch.equal(from_list[:1], IMAGENET.to_tensor(batch[0]))
    # channel order is kept: channel c of the tensor is channel c of the image
    assert torch.equal(from_list[0, 1], (torch.from_numpy(batch[0][..., 1]).float() / 255 - 0.456) / 0.224)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8), np.uint8), "H×W×3"),
    (np.zeros((8, 8, 4), np.uint8), "H×W×3"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], "different sizes"),
    ([], "no images"),
])
def test_to_tensor_rejects_bad_input(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        IMAGENET.to_tensor(bad)


def test_normalization_validation_and_metadata() -> None:
    with pytest.raises(ValueError, match="3 values"):
        Normalization((0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        Normalization((0.5,) * 3, (0.5, 0.0, 0.5))
    assert Normalization.from_dict({"mean": [0.5] * 3, "std": [0.5] * 3}) == SIGNED_UNIT
    assert Normalization.from_dict(IMAGENET.to_dict()) == IMAGENET
    with pytest.raises(ValueError, match="'mean' and 'std'"):
        Normalization.from_dict({"classes": ["a"]})


def test_training_inference_and_the_exported_graph_normalise_identically(shared_data) -> None:
    """One arithmetic: training's transform (numpy, H×W×3), the Predictor's tensors (N×3×H×W) and the exported
    graph's traced copy give the same float32 bits on a real photo, for both presets."""
    from deeplab.data.io import read_image
    from deeplab.data.transforms import Normalize
    from deeplab.export.graph import SegmentationGraph

    image = read_image(next((shared_data / "camvid" / "val").glob("*.png")))
    for preset in (IMAGENET, SIGNED_UNIT, Normalization((0.3, 0.5, 0.7), (0.2, 0.4, 0.9), scale=200.0)):
        training = torch.from_numpy(Normalize(preset)(image, None)[0]).permute(2, 0, 1)
        inference = preset.to_tensor(image)[0]
        graph = SegmentationGraph(torch.nn.Identity(), output="logits", normalization=preset)
        with torch.no_grad():
            exported = graph(torch.from_numpy(image).permute(2, 0, 1)[None])[0]
        assert torch.equal(training, inference) and torch.equal(inference, exported)
        assert inference.dtype == torch.float32 and not torch.equal(inference, IMAGENET.to_tensor(image)[0]) \
            or preset == IMAGENET
