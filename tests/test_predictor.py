"""The Predictor: outputs and areas, eval mode, size bucketing (never padding), output-stride switching, backends,
model files, one-pixel and malformed images, channels-last and AMP."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeplab.data.normalization import IMAGENET, SIGNED_UNIT, Normalization
from deeplab.inference import Prediction, Predictor
from deeplab.weights.card import ModelCard
from deeplab.weights.modelfile import save_model
from inference_fixtures import ROUNDING, Recorder, assert_same_labels, build, reference


def test_predictor_outputs(mobilenet, images) -> None:
    predictor = Predictor(mobilenet, normalization=IMAGENET, class_names=["sky", "road", "car", "tree"])
    batch = images["voc_80x60"][:2] + images["camvid_96x72"][:1]
    results = predictor.predict(batch)
    assert len(results) == 3 and all(isinstance(r, Prediction) for r in results)
    for result, image in zip(results, batch):
        h, w = image.shape[:2]
        assert result.labels.shape == (h, w) and result.labels.dtype == np.int64
        assert result.probabilities.shape == (4, h, w) and result.probabilities.dtype == np.float32
        np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(result.labels, result.probabilities.argmax(0))
        areas = result.areas()
        assert list(areas) == ["sky", "road", "car", "tree"] and sum(areas.values()) == h * w
        assert abs(sum(result.areas(fraction=True).values()) - 1.0) < 1e-9
    assert len(np.unique(np.concatenate([r.labels.ravel() for r in results]))) > 1  # varied class maps
    lean = Predictor(mobilenet, normalization=IMAGENET, return_probabilities=False).predict(batch)
    assert all(r.probabilities is None for r in lean)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(lean, results))
    assert predictor.predict([]) == []


def test_predictor_puts_model_in_eval_mode(images) -> None:
    model = build("mobilenet_v2", images).train()
    Predictor(model, normalization=IMAGENET)
    assert not model.training


def test_bucketing_equals_one_at_a_time_and_padding_would_not(model, images) -> None:
    """Mixed sizes are batched by size. Each image then gets what it gets alone (up to the ~1e-7 rounding
    of batched convolutions); padding the small images into one batch would change the image-pooling
    branch's average and so the predictions."""
    mixed = [images["voc_80x60"][0], images["camvid_96x72"][0], images["voc_64x48"][0], images["voc_80x60"][1],
             images["camvid_96x72"][1], images["voc_80x60"][2], images["voc_64x48"][1], images["camvid_96x72"][2]]
    recorder = Recorder(model)
    results = Predictor(model, normalization=IMAGENET, backend=recorder, batch_size=2).predict(mixed)
    # 3 + 3 + 2 images of three sizes in batches of at most 2: 2 + 2 + 1 calls, one size per call
    assert sorted(recorder.shapes) == sorted([(2, 3, 60, 80), (1, 3, 60, 80), (2, 3, 72, 96), (1, 3, 72, 96),
                                              (2, 3, 48, 64)])
    for result, image in zip(results, mixed):
        alone = reference(model, image)
        torch.testing.assert_close(torch.from_numpy(result.probabilities), alone, rtol=0, atol=ROUNDING)
        assert_same_labels(result.labels, alone)

    # the alternative: zero-pad (after normalisation) to the largest size, one batch, crop back
    small, large = images["voc_64x48"][0], images["camvid_96x72"][0]
    canvas = torch.zeros(2, 3, 72, 96)
    canvas[0, :, :48, :64] = IMAGENET.to_tensor(small)[0]
    canvas[1] = IMAGENET.to_tensor(large)[0]
    with torch.no_grad():
        padded = torch.softmax(model(canvas), dim=1)[0, :, :48, :64]
    assert (padded - reference(model, small)).abs().max() > 100 * ROUNDING


def test_output_stride_switch(images) -> None:
    model = build("resnet18", images, num_classes=3)
    assert model.output_stride == 16 and model.aspp_rates == (6, 12, 18)
    at_os8 = copy.deepcopy(model)
    at_os8.set_output_stride(8)
    predictor = Predictor(model, normalization=IMAGENET, output_stride=8, channels_last=False)  # exact compare
    # the Predictor runs the model at OS8 inside each call only: the model and its config keep OS16
    assert model.output_stride == 16 and model.aspp_rates == (6, 12, 18) and model.config["output_stride"] == 16
    image = images["voc_64x48"][0]
    result = predictor.predict([image])[0]
    assert torch.equal(torch.from_numpy(result.probabilities), reference(at_os8, image))
    assert model.output_stride == 16 and model.aspp_rates == (6, 12, 18)
    assert not torch.equal(torch.from_numpy(result.probabilities), reference(model, image))
    with pytest.raises(ValueError):
        Predictor(build("resnet18", images), normalization=IMAGENET, output_stride=12)
    with pytest.raises(ValueError, match="at_output_stride"):
        Predictor(nn.Conv2d(3, 2, 1), normalization=IMAGENET, output_stride=8)


@pytest.mark.parametrize("as_numpy", [False, True])
def test_backend_callable_with_tta(mobilenet, images, as_numpy) -> None:
    """A backend (e.g. an ONNX runtime session returning numpy) replaces the model; TTA wraps it."""
    batch = images["voc_80x60"][:3]
    options = {"normalization": IMAGENET, "scales": (0.75, 1.0), "flip": True, "batch_size": 4}
    recorder = Recorder(mobilenet, as_numpy=as_numpy)
    via_backend = Predictor(None, backend=recorder, **options).predict(batch)
    direct = Predictor(mobilenet, **options).predict(batch)
    assert recorder.shapes == [(6, 3, 45, 60), (6, 3, 60, 80)]  # each scale's 3 images and their mirrors at once
    for a, b in zip(via_backend, direct):
        np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_backend_argument_errors(mobilenet) -> None:
    with pytest.raises(ValueError, match="model, a backend"):
        Predictor(None, normalization=IMAGENET)
    with pytest.raises(ValueError, match="output_stride"):
        Predictor(None, normalization=IMAGENET, backend=mobilenet, output_stride=8)
    with pytest.raises(TypeError, match="callable"):
        Predictor(None, normalization=IMAGENET, backend="model.onnx")
    with pytest.raises(TypeError, match="Normalization"):
        Predictor(mobilenet, normalization=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="batch_size"):
        Predictor(mobilenet, normalization=IMAGENET, batch_size=0)
    bad_shape = Predictor(None, normalization=IMAGENET, backend=lambda x: torch.zeros(3, 4))
    with pytest.raises(ValueError, match="N×C×H×W"):
        bad_shape.predict([np.zeros((8, 8, 3), np.uint8)])


def test_backend_with_low_resolution_logits_is_upsampled(mobilenet, images) -> None:
    def stride8(x: torch.Tensor) -> torch.Tensor:  # a backend without the final resize
        return F.avg_pool2d(mobilenet(x), 8)

    result = Predictor(None, normalization=IMAGENET, backend=stride8).predict(images["voc_64x48"][:1])[0]
    assert result.probabilities.shape == (4, 48, 64)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_from_file(tmp_path, mobilenet, images, suffix) -> None:
    classes = ["background", "person", "car", "tree"]
    path = save_model(mobilenet, tmp_path / f"model{suffix}",
                      ModelCard(mobilenet.config, classes, Normalization((0.5,) * 3, (0.5,) * 3)))
    predictor = Predictor.from_file(path, flip=True)
    assert predictor.normalization == SIGNED_UNIT and predictor.class_names == tuple(classes) and predictor.flip
    image = images["voc_64x48"][0]
    expected = Predictor(mobilenet, normalization=SIGNED_UNIT, flip=True).predict([image])[0]
    result = predictor.predict([image])[0]
    np.testing.assert_array_equal(result.probabilities, expected.probabilities)
    assert list(result.areas()) == classes
    overridden = Predictor.from_file(path, normalization=IMAGENET, class_names=list("abcd"))
    assert overridden.normalization == IMAGENET and overridden.class_names == tuple("abcd")
    bare = save_model(mobilenet, tmp_path / f"bare{suffix}", ModelCard.default(mobilenet.config))
    assert Predictor.from_file(bare).normalization == IMAGENET  # the default card: torchvision's convention
    assert Predictor.from_file(bare).predict([image])[0].class_names == ("0", "1", "2", "3")


@pytest.mark.parametrize("options", [{}, {"scales": (0.5, 1.0), "flip": True}, {"tile": 16}])
def test_one_pixel_image(model, options) -> None:
    pixel = np.array([[[200, 30, 90]]], dtype=np.uint8)
    result = Predictor(model, normalization=IMAGENET, **options).predict([pixel])[0]
    assert result.labels.shape == (1, 1) and result.probabilities.shape == (model.config["num_classes"], 1, 1)
    assert sum(result.areas().values()) == 1
    np.testing.assert_allclose(result.probabilities.sum(), 1.0, atol=1e-6)


def test_predict_rejects_bad_images(mobilenet, images) -> None:
    predictor = Predictor(mobilenet, normalization=IMAGENET)
    with pytest.raises(ValueError, match="wrap a single image"):
        predictor.predict(images["voc_64x48"][0])
    with pytest.raises(ValueError, match=r"images\[1\].*H×W×3"):
        predictor.predict([images["voc_64x48"][0], np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        predictor.predict([np.zeros((0, 5, 3), np.uint8)])
    with pytest.raises(TypeError, match="numpy"):
        predictor.predict([torch.zeros(8, 8, 3, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="2 class names"):
        Predictor(mobilenet, normalization=IMAGENET, class_names=["a", "b"]).predict(images["voc_64x48"][:1])


def test_areas_known_answer() -> None:
    labels = np.array([[0, 0, 2], [2, 2, 2]], dtype=np.int64)
    prediction = Prediction(labels=labels, probabilities=None, class_names=("a", "b", "c"))
    assert prediction.areas() == {"a": 2, "b": 0, "c": 4}
    assert prediction.areas(fraction=True) == {"a": 2 / 6, "b": 0.0, "c": 4 / 6}


def test_channels_last_and_cpu_amp_give_the_same_result(images) -> None:
    batch = images["camvid_96x72"][:2]
    base = Predictor(build("resnet18", images, num_classes=3), normalization=IMAGENET).predict(batch)
    fast = Predictor(build("resnet18", images, num_classes=3), normalization=IMAGENET, channels_last=True,
                     amp=True).predict(batch)  # amp is a no-op on the CPU and must not need CUDA
    for a, b in zip(base, fast):
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=ROUNDING)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp(images) -> None:
    model = build("resnet18", images, num_classes=3)
    batch = images["camvid_96x72"][:2]
    cpu = Predictor(copy.deepcopy(model), normalization=IMAGENET).predict(batch)
    gpu = Predictor(model, normalization=IMAGENET, device="cuda", amp=True).predict(batch)
    for a, b in zip(cpu, gpu):
        assert b.probabilities.dtype == np.float32
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=2e-2)
        assert (a.labels == b.labels).mean() > 0.98
