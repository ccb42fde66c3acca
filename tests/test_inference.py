"""Inference engine tests: normalisation, test-time augmentation (known answers), sliding windows, size
bucketing, output-stride switching, pluggable backends, model files, tiny and malformed inputs.

Models are small (DeepLabV3 MobileNetV2 ×0.5 and ResNet-18, 3–5 classes), seeded, and *calibrated*: a
freshly initialised MobileNetV2 with default batch-norm statistics gives a spatially constant output (all
activations saturate), which would make flip, bucketing and tiling tests pass vacuously. So the batch-norm
running statistics are estimated on real images first (one train-mode pass, cumulative average) and the
classifier is scaled up so that class maps are varied and argmax is not decided by float rounding.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeplab.checkpoint import save_model
from deeplab.data.io import read_image
from deeplab.inference import (IMAGENET, PAPER_SCALES, SIGNED_UNIT, Normalization, Prediction, Predictor,
                               _window_starts, predict_logits, predict_probabilities)
from deeplab.models import deeplabv3


# --- fixtures ----------------------------------------------------------------------------------------------

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


# --- Normalization ---------------------------------------------------------------------------------------

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
    assert Normalization.from_metadata({"mean": [0.5] * 3, "std": [0.5] * 3}) == SIGNED_UNIT
    with pytest.raises(ValueError, match="normalization="):
        Normalization.from_metadata({"classes": ["a"]})


# --- predict_logits: shapes and known answers --------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"scales": (0.75, 1.25), "flip": True}])
def test_probabilities_shape_and_sum(model, images, options) -> None:
    for batch in (images["voc_64x48"], images["camvid_96x72"]):
        x = IMAGENET.to_tensor(batch)
        probs = predict_logits(model, x, **options)
        assert probs.shape == (len(batch), model.config["num_classes"], *x.shape[-2:])
        assert probs.dtype == torch.float32 and torch.isfinite(probs).all() and (probs >= 0).all()
        torch.testing.assert_close(probs.sum(1), torch.ones(len(batch), *x.shape[-2:]), rtol=0, atol=1e-5)


def test_single_scale_is_exactly_softmax_of_the_model(model, images) -> None:
    x = IMAGENET.to_tensor(images["camvid_96x72"])
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1)
    assert torch.equal(predict_logits(model, x), expected)
    assert torch.equal(predict_logits(model, x, scales=(1.0,)), expected)
    assert predict_probabilities is predict_logits


def test_flip_known_answer(model, images) -> None:
    x = IMAGENET.to_tensor(images["voc_80x60"][:2])
    with torch.no_grad():
        plain = torch.softmax(model(x), dim=1)
        mirrored = torch.softmax(model(x.flip(-1)), dim=1).flip(-1)
    result = predict_logits(model, x, flip=True)
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
    result = predict_logits(mobilenet, x, scales=(1.0, 0.5, 1.25))
    torch.testing.assert_close(result, expected / 3, rtol=0, atol=1e-6)


def test_paper_protocol_runs_every_pass(mobilenet, images) -> None:
    assert PAPER_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    recorder = Recorder(mobilenet)
    x = IMAGENET.to_tensor(images["voc_64x48"])  # 48×64
    probs = predict_logits(recorder, x, scales=PAPER_SCALES, flip=True)
    expected_sizes = [(round(48 * s), round(64 * s)) for s in PAPER_SCALES for _ in range(2)]
    assert [shape[-2:] for shape in recorder.shapes] == expected_sizes
    assert probs.shape == (2, 4, 48, 64)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 48, 64), rtol=0, atol=1e-5)


def test_model_left_in_training_mode_is_evaluated_and_restored(images) -> None:
    model = build("mobilenet_v2", images, aux_loss=True).train()  # training + aux: forward gives a tuple
    x = IMAGENET.to_tensor(images["voc_64x48"])
    probs = predict_logits(model, x)
    assert model.training
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x), dim=1)
    assert torch.equal(probs, expected)


@pytest.mark.parametrize("kwargs, match", [
    ({"scales": ()}, "scales"), ({"scales": (1.0, 0.0)}, "scales"), ({"scales": (float("nan"),)}, "scales"),
    ({"tile": 0}, "tile"), ({"tile": 32.5}, "tile"), ({"tile": 32, "tile_overlap": 1.0}, "tile_overlap"),
])
def test_predict_logits_rejects_bad_options(mobilenet, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        predict_logits(mobilenet, torch.zeros(1, 3, 16, 16), **kwargs)


def test_predict_logits_rejects_bad_batches(mobilenet) -> None:
    with pytest.raises(ValueError, match="float"):
        predict_logits(mobilenet, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="N×3×H×W"):
        predict_logits(mobilenet, torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="empty"):
        predict_logits(mobilenet, torch.zeros(0, 3, 16, 16))


# --- sliding window ---------------------------------------------------------------------------------------

def test_window_origins_cover_the_axis() -> None:
    assert _window_starts(50, 64, 43) == [0]
    assert _window_starts(64, 64, 43) == [0]
    assert _window_starts(100, 64, 43) == [0, 36]
    assert _window_starts(200, 64, 43) == [0, 34, 68, 102, 136]  # steps of at most 43, evenly spread
    for size, tile, stride in ((97, 32, 21), (513, 129, 86), (65, 64, 1)):
        starts = _window_starts(size, tile, stride)
        assert starts[0] == 0 and starts[-1] == size - tile
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))  # overlap at least as asked
        covered = np.zeros(size, bool)
        for start in starts:
            covered[start:start + tile] = True
        assert covered.all()


@pytest.mark.parametrize("options", [{}, {"flip": True, "scales": (0.5, 1.0)}])
def test_tile_larger_than_image_is_exactly_untiled(model, images, options) -> None:
    x = IMAGENET.to_tensor(images["camvid_96x72"])  # 72×96; the largest scaled pass is 72×96
    untiled = predict_logits(model, x, **options)
    assert torch.equal(predict_logits(model, x, tile=96, **options), untiled)
    assert torch.equal(predict_logits(model, x, tile=500, **options), untiled)


def _interior(height: int, width: int, tile: int, overlap: float, margin: int) -> np.ndarray:
    """Pixels at least ``margin`` away from every window border that is not a border of the image; a
    zero-padded image edge counts as a window border (the model sees padding, not its own zero padding)."""
    stride = max(1, round(tile * (1 - overlap)))
    padded_h, padded_w = max(height, tile), max(width, tile)
    touched = np.zeros((padded_h, padded_w), bool)

    def spans(size: int, padded: int) -> list[tuple[int, int, int, int]]:
        out = []
        for start in _window_starts(padded, tile, stride):
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
    full = predict_logits(local, x)
    tiled = predict_logits(local, x, tile=64, tile_overlap=1 / 3, window_batch_size=3)
    assert tiled.shape == full.shape
    mask = torch.from_numpy(_interior(*size, tile=64, overlap=1 / 3, margin=2))
    assert mask.float().mean() > 0.8
    difference = (full - tiled).abs().amax(dim=(0, 1))
    assert difference[mask].max() < 1e-6
    assert difference[~mask].max() > 1e-3  # windows really were cut there


def test_windows_run_in_bounded_batches(mobilenet, images) -> None:
    x = IMAGENET.to_tensor(images["camvid_96x72"][:2])  # 72×96, tile 40, step ≤ 27: 3×4 windows per image
    recorder = Recorder(mobilenet)
    tiled = predict_logits(recorder, x, tile=40, window_batch_size=4)
    assert all(shape[0] <= 4 and shape[-2:] == (40, 40) for shape in recorder.shapes)
    assert sum(shape[0] for shape in recorder.shapes) == 2 * 3 * 4
    one_by_one = predict_logits(mobilenet, x, tile=40, window_batch_size=1)
    torch.testing.assert_close(tiled, one_by_one, rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("size", [(72, 96), (30, 96), (96, 30)])
def test_tiled_deeplab_shapes(model, images, size) -> None:
    batch = [np.asarray(Image.fromarray(im).resize(size[::-1], Image.BILINEAR)) for im in images["camvid_96x72"][:2]]
    x = IMAGENET.to_tensor(batch)
    probs = predict_logits(model, x, tile=48, flip=True)
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


# --- Predictor --------------------------------------------------------------------------------------------

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
    # the Predictor leaves the model at the stride it was asked for (documented)
    assert model.output_stride == 8 and model.aspp_rates == (12, 24, 36) and model.config["output_stride"] == 8
    image = images["voc_64x48"][0]
    result = predictor.predict([image])[0]
    assert torch.equal(torch.from_numpy(result.probabilities), reference(at_os8, image))
    with pytest.raises(ValueError):
        Predictor(build("resnet18", images), normalization=IMAGENET, output_stride=12)
    with pytest.raises(ValueError, match="set_output_stride"):
        Predictor(nn.Conv2d(3, 2, 1), normalization=IMAGENET, output_stride=8)


@pytest.mark.parametrize("as_numpy", [False, True])
def test_backend_callable_with_tta(mobilenet, images, as_numpy) -> None:
    """A backend (e.g. an ONNX runtime session returning numpy) replaces the model; TTA wraps it."""
    batch = images["voc_80x60"][:3]
    options = {"normalization": IMAGENET, "scales": (0.75, 1.0), "flip": True, "batch_size": 4}
    recorder = Recorder(mobilenet, as_numpy=as_numpy)
    via_backend = Predictor(None, backend=recorder, **options).predict(batch)
    direct = Predictor(mobilenet, **options).predict(batch)
    assert [s[-2:] for s in recorder.shapes] == [(45, 60), (45, 60), (60, 80), (60, 80)]
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
                      metadata={"classes": classes, "mean": [0.5] * 3, "std": [0.5] * 3})
    predictor = Predictor.from_file(path, flip=True)
    assert predictor.normalization == SIGNED_UNIT and predictor.class_names == tuple(classes) and predictor.flip
    image = images["voc_64x48"][0]
    expected = Predictor(mobilenet, normalization=SIGNED_UNIT, flip=True).predict([image])[0]
    result = predictor.predict([image])[0]
    np.testing.assert_array_equal(result.probabilities, expected.probabilities)
    assert list(result.areas()) == classes
    overridden = Predictor.from_file(path, normalization=IMAGENET, class_names=list("abcd"))
    assert overridden.normalization == IMAGENET and overridden.class_names == tuple("abcd")
    bare = save_model(mobilenet, tmp_path / f"bare{suffix}")
    with pytest.raises(ValueError, match="normalization="):
        Predictor.from_file(bare)
    assert Predictor.from_file(bare, normalization=IMAGENET).predict([image])[0].class_names == ("0", "1", "2", "3")


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
