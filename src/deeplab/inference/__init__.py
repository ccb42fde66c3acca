"""Inference: test-time augmentation, sliding windows, a batching ``Predictor``, backends, and the uses of the
predictor — loading any model file, evaluating on a dataset, segmenting files.

The evaluation protocol of the paper: train at output stride 16 and evaluate at 8 with the same weights;
optionally feed the image at several scales ({0.5, 0.75, 1.0, 1.25, 1.5, 1.75}, ``PAPER_SCALES``) and
left-right flipped, and average the class *probabilities* of all passes.

- ``tta.py``: ``predict_probabilities`` (scales × flips, each pass optionally by sliding window);
- ``predictor.py``: ``Predictor`` — numpy images in, ``Prediction`` (labels, probabilities, areas) out; images
  of different sizes are bucketed by size, never padded (padding would change what the image-pooling branch
  averages, and so the predictions);
- ``backends.py``: ``OnnxRuntimeModel`` and the readers of exported graphs;
- ``loading.py``: ``load_any`` — every kind of model file, read once, with its ``ModelCard``;
- ``evaluation.py``: ``evaluate`` — the one evaluation loop (``deeplab eval``, the demo, training validation);
- ``segment_files.py``: ``segment_files`` — what ``deeplab predict`` writes per image.

Every forward pass runs under ``torch.inference_mode()`` with the model in eval mode.
"""

from ..data.normalization import IMAGENET, SIGNED_UNIT, Normalization
from .evaluation import EvaluationResult, evaluate
from .loading import LoadedModel, load_any
from .predictor import Prediction, Predictor
from .tta import PAPER_SCALES, ForwardFn, predict_probabilities, sliding_window_probabilities

__all__ = ["EvaluationResult", "ForwardFn", "IMAGENET", "LoadedModel", "Normalization", "PAPER_SCALES", "Prediction",
           "Predictor", "SIGNED_UNIT", "evaluate", "load_any", "predict_probabilities", "sliding_window_probabilities"]
