"""Dense CRF post-processing (``deeplab.crf``) on a real VOC image with a synthetic noisy probability map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("pydensecrf.densecrf", reason="the CRF extra is not installed (pip install 'deeplab[crf]')")

from deeplab.crf import PROBABILITY_FLOOR, CRFParams, dense_crf  # noqa: E402
from deeplab.data.datasets import voc_dataset  # noqa: E402

NUM_CLASSES, IGNORE = 21, 255


@pytest.fixture(scope="module")
def sample(shared_data):
    """(image H×W×3 uint8, label H×W int64, noisy probabilities C×H×W float32) of the first val_dev image."""
    image, label = voc_dataset(shared_data / "voc2012_val_dev", "val_dev.txt").read(0)[:2]
    rng = np.random.default_rng(0)
    # One-hot ground truth, 255 (boundary) pixels uniform, then blurred (smeared borders) ...
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[np.where(label == IGNORE, 0, label)].transpose(2, 0, 1)
    onehot[:, label == IGNORE] = 1.0 / NUM_CLASSES
    blurred = F.avg_pool2d(torch.from_numpy(onehot)[None], 15, stride=1, padding=7,
                           count_include_pad=False)[0].numpy()
    # ... plus salt-and-pepper label noise: 30% of pixels confidently (0.6) vote for a random wrong class.
    noisy = rng.random(label.shape) < 0.3
    wrong = (np.where(label == IGNORE, 0, label) + rng.integers(1, NUM_CLASSES, label.shape)) % NUM_CLASSES
    rows, cols = np.nonzero(noisy)
    probabilities = blurred.copy()
    probabilities[:, rows, cols] *= 0.4
    probabilities[wrong[rows, cols], rows, cols] += 0.6
    return image, label, probabilities / probabilities.sum(0, keepdims=True)


def _accuracy(probabilities: np.ndarray, label: np.ndarray) -> float:
    valid = label != IGNORE
    return float((probabilities.argmax(0)[valid] == label[valid]).mean())


def test_crf_improves_a_noisy_map_of_a_real_image(sample):
    image, label, probabilities = sample
    refined = dense_crf(image, probabilities)
    assert refined.shape == probabilities.shape and refined.dtype == np.float32
    assert np.all(refined >= 0)
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)
    before, after = _accuracy(probabilities, label), _accuracy(refined, label)
    assert before < 0.85  # the noise really hurts ...
    assert after > before + 0.05, (before, after)  # ... and the CRF removes most of it


def test_zero_iterations_is_the_normalised_unary(sample):
    image, _, probabilities = sample
    image, probabilities = image[:64, :80], probabilities[:, :64, :80]  # a crop: cheap
    probabilities = probabilities * 3.0  # not normalised: the CRF's softmax of −unary normalises
    probabilities[:, 0, 0] = 0.0  # a hard zero: clipped, not −log 0
    probabilities[0, 0, 0] = 1.0
    out = dense_crf(image, probabilities, CRFParams(iterations=0))
    clipped = np.clip(probabilities, PROBABILITY_FLOOR, None)
    np.testing.assert_allclose(out, clipped / clipped.sum(0, keepdims=True), rtol=1e-4, atol=1e-6)
    # With iterations the pairwise terms change the result, still a distribution.
    out = dense_crf(image, probabilities, CRFParams(iterations=2))
    assert not np.allclose(out, clipped / clipped.sum(0, keepdims=True), atol=1e-3)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-4)


def test_bad_inputs_raise_one_line_errors(sample):
    image, _, probabilities = sample
    with pytest.raises(ValueError, match="image is .* but probabilities are"):
        dense_crf(image, probabilities[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), probabilities)
    with pytest.raises(ValueError, match="H×W×3"):
        dense_crf(image[..., 0], probabilities)
    with pytest.raises(ValueError, match="C×H×W"):
        dense_crf(image, probabilities[0])
    with pytest.raises(ValueError, match="non-negative"):
        dense_crf(image, -probabilities)
    with pytest.raises(ValueError, match="iterations"):
        CRFParams(iterations=-1)
    with pytest.raises(ValueError, match="bi_xy_std"):
        CRFParams(bi_xy_std=0)


def test_missing_package_says_how_to_install(monkeypatch, sample):
    import builtins

    real_import = builtins.__import__

    def no_crf(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crf)
    image, _, probabilities = sample
    with pytest.raises(ImportError, match=r"pip install 'deeplab\[crf\]'"):
        dense_crf(image[:8, :8], probabilities[:, :8, :8])
