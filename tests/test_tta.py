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
    torch.testing.assert_close(result, (plain + mirrored) / 2, rtol=0, atol=1e-5)  # pair batched: rounding (1.4e-6 on AVX2 kernels)
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
    torch.testing.assert_close(result, expected / 3, rtol=0, atol=1e-5)


def test_paper_protocol_runs_every_pass_once(mobilenet, images) -> None:
    """Twelve passes in six forward calls: each scale's image and its mirror go through as one batch."""
    assert PAPER_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    recorder = Recorder(mobilenet)
    x = IMAGENET.to_tensor(images["voc_64x48"])  # 2 images, 48×64
    probs = predict_probabilities(recorder, x, scales=PAPER_SCALES, flip=True)
    assert recorder.shapes == [(4, 3, round(48 * s), round(64 * s)) for s in PAPER_SCALES]
    assert probs.shape == (2, 4, 48, 64)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 48, 64), rtol=0, atol=1e-5)


def _every_pass_resized(model, x, scales):
    """The protocol spelled out: each of the 2·len(scales) passes run alone and resized back alone."""
    height, width = x.shape[-2:]
    total = torch.zeros(x.shape[0], model.config["num_classes"], height, width)
    with torch.no_grad():
        for scale in scales:
            size = (round(height * scale), round(width * scale))
            scaled = x if size == (height, width) else F.interpolate(x, size=size, mode="bilinear",
                                                                     align_corners=False)
            for mirrored in (False, True):
                probs = torch.softmax(model(scaled.flip(-1) if mirrored else scaled), dim=1)
                probs = probs.flip(-1) if mirrored else probs
                if probs.shape[-2:] != (height, width):
                    probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
                total += probs
    return total / (2 * len(scales))


def test_paired_flip_and_one_resize_per_scale_equal_every_pass_alone(mobilenet, images, monkeypatch) -> None:
    import deeplab.inference.tta as tta

    resized = []

    def interpolate(tensor, *args, **kwargs):
        resized.append(tuple(tensor.shape))
        return F.interpolate(tensor, *args, **kwargs)

    x = IMAGENET.to_tensor(images["camvid_96x72"])  # real CamVid frames, 72×96
    expected = _every_pass_resized(mobilenet, x, PAPER_SCALES)
    monkeypatch.setattr(tta, "F", type("Functional", (), {"interpolate": staticmethod(interpolate), "pad": F.pad}))
    result = predict_probabilities(mobilenet, x, scales=PAPER_SCALES, flip=True)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)
    probability_resizes = [shape for shape in resized if shape[1] != 3]
    assert len(probability_resizes) == 5  # one per scale other than 1.0 (images resized: the other 5 calls)
    assert all(shape[0] == x.shape[0] for shape in probability_resizes)  # the flipped pair summed before it


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


def test_class_labels_equal_argmax_ties_included(mobilenet, images) -> None:
    from deeplab.inference.tta import class_labels

    probs = predict_probabilities(mobilenet, IMAGENET.to_tensor(images["camvid_96x72"]))  # real frames
    assert torch.equal(class_labels(probs), probs.argmax(1))
    assert torch.equal(class_labels(probs[0], 0), probs[0].argmax(0))
    tied = probs.round(decimals=1)  # many exact ties: the first maximal class wins, as with argmax
    assert (tied.max(1).values.unsqueeze(1) == tied).sum(1).max() > 1
    assert torch.equal(class_labels(tied), tied.argmax(1))
