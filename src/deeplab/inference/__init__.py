"""Inference: normalisation, test-time augmentation, sliding windows and a batching ``Predictor``.

The evaluation protocol of the paper (SPEC §4): train at output stride 16 and evaluate at 8 with the same
weights; optionally feed the image at several scales ({0.5, 0.75, 1.0, 1.25, 1.5, 1.75}, ``PAPER_SCALES``)
and left-right flipped, and average the class *probabilities* of all passes.

- ``Normalization``: uint8 H×W×3 images → a normalised float N×3×H×W tensor (``IMAGENET``, ``SIGNED_UNIT``).
- ``predict_logits``: class probabilities averaged over scales × flips at the input resolution, each pass
  optionally by sliding window (``tile``) for images too large to run whole.
- ``Predictor``: numpy images in, ``Prediction`` (labels, probabilities, areas) out; images of different
  sizes are batched by bucketing equal sizes together — never by padding, which would change what the
  image-pooling branch averages and so the predictions.

Every forward pass runs under ``torch.inference_mode()`` with the model in eval mode.

Files: ``normalization.py`` (``Normalization``, ``IMAGENET``, ``SIGNED_UNIT``, image checks), ``tta.py``
(``predict_logits``, ``sliding_window_probabilities``, ``PAPER_SCALES``), ``predictor.py`` (``Prediction``,
``Predictor``).
"""

from .normalization import IMAGENET, SIGNED_UNIT, Normalization
from .predictor import Prediction, Predictor
from .tta import (PAPER_SCALES, ForwardFn, _window_starts, predict_logits, predict_probabilities,
                  sliding_window_probabilities)

__all__ = ["IMAGENET", "PAPER_SCALES", "SIGNED_UNIT", "Normalization", "Prediction", "Predictor",
           "predict_logits", "predict_probabilities", "sliding_window_probabilities"]
