"""Test-time augmentation: probabilities averaged over scales and flips, with known answers built from plain
forward passes, the paper's twelve passes, and refusals of bad options and batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deeplab.data.normalization import IMAGENET
from deeplab.inference.tta import PAPER_SCALES, predict_probabilities
from inference_fixtures import Recorder, build


@pytest.mark.parametrize("options", [{}, {"scales": (0.75, 1.25), "flip": True}])
def test_probabilities_shape_and_sum(model, images, options) -> None:
    for batch in (images["voc_64x48"], images["camvid_96x72"]):
        x = IMAGENET.to_tensor(batch)
        probs = predict_probabilities(model, x, **options)
        assert probs.shape == (len(batch), model.config["num_classes"], *x.shape[-2:])
        assert probs.dtype == torch.float32 and torch.isfinite(probs).all() and (probs >= 0).all()
        torch.testing.assert_close(probs.sum(1), torch.ones(len(batch), *x.shape[-2:]), rtol=0, atol=1e-5)


def test_single_scale_is_exactly_softmax_of_the_model(model, images) -> None:
    x = IMAGENET.to_tensor(images["camvid_96x72"])
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1)
    assert torch.equal(predict_probabilities(model, x), expected)
    assert torch.equal(predict_probabilities(model, x, scales=(1.0,)), expected)


def test_flip_known_answer(model, images) -> None:
    x = IMAGENET.to_tensor(images["voc_80x60"][:2])
    with torch.no_grad():
        plain = torch.softmax(model(x), dim=1)
        mirrored = torch.softmax(model(x.flip(-1)), dim=1).flip(-1)
    result = predict_probabilities(model, x, flip=True)
    torch.testing.assert_close(result, (plain + mirrored) / 2, rtol=0, atol=1e-7)
    assert (plain - mirrored).abs().max() > 1e-3  # the flipped pass really is a different prediction


def test_multi_scale_known_answer(mobilenet, images) -> None:
    x = IMAGENET.to_tensor(images["voc_80x60"][:2])  # 60×80
    with torch.no_grad():
        expected = torch.softmax(mobilenet(x), dim=1)
        for size in ((30, 40), (75, 100)):  # scales 0.5 and 1.25
            small = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            probs = torch.softmax(mobilenet(small), dim=1)
            expected = expected + F.interpolate(probs, size=(60, 80), mode="bilinear", align_corners=False)
    result = predict_probabilities(mobilenet, x, scales=(1.0, 0.5, 1.25))
    torch.testing.assert_close(result, expected / 3, rtol=0, atol=1e-6)


def test_paper_protocol_runs_every_pass(mobilenet, images) -> None:
    assert PAPER_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    recorder = Recorder(mobilenet)
    x = IMAGENET.to_tensor(images["voc_64x48"])  # 48×64
    probs = predict_probabilities(recorder, x, scales=PAPER_SCALES, flip=True)
    expected_sizes = [(round(48 * s), round(64 * s)) for s in PAPER_SCALES for _ in range(2)]
    assert [shape[-2:] for shape in recorder.shapes] == expected_sizes
    assert probs.shape == (2, 4, 48, 64)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 48, 64), rtol=0, atol=1e-5)


def test_model_left_in_training_mode_is_evaluated_and_restored(images) -> None:
    model = build("mobilenet_v2", images, aux_loss=True).train()  # training + aux: forward gives a tuple
    x = IMAGENET.to_tensor(images["voc_64x48"])
    probs = predict_probabilities(model, x)
    assert model.training
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x), dim=1)
    assert torch.equal(probs, expected)


@pytest.mark.parametrize("kwargs, match", [
    ({"scales": ()}, "scales"), ({"scales": (1.0, 0.0)}, "scales"), ({"scales": (float("nan"),)}, "scales"),
    ({"tile": 0}, "tile"), ({"tile": 32.5}, "tile"), ({"tile": 32, "tile_overlap": 1.0}, "tile_overlap"),
])
def test_predict_probabilities_rejects_bad_options(mobilenet, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        predict_probabilities(mobilenet, torch.zeros(1, 3, 16, 16), **kwargs)


def test_predict_probabilities_rejects_bad_batches(mobilenet) -> None:
    with pytest.raises(ValueError, match="float"):
        predict_probabilities(mobilenet, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="N×3×H×W"):
        predict_probabilities(mobilenet, torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="empty"):
        predict_probabilities(mobilenet, torch.zeros(0, 3, 16, 16))
