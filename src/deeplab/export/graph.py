"""``SegmentationGraph``: the model plus, optionally, its pre- and post-processing as one traceable module — what
every exporter traces — and the helpers the exporters share.

uint8 images in (N×3×H×W, or N×H×W×3 with ``layout="NHWC"``), normalised with the card's mean/std baked in
as buffers, and int64 labels N×H×W (or logits / softmax probabilities) out. The normalisation keeps the same
order of operations as ``Normalization.apply`` (a test checks that the two agree bit for bit).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..data.normalization import IMAGENET, Normalization
from ..weights.card import ModelCard

OUTPUTS = ("labels", "logits", "probabilities")
LAYOUTS = ("NCHW", "NHWC")
DEFAULT_SAMPLE_SIZE = (72, 88)  # trace size; deliberately none of the parity sizes
SAMPLE_BATCH = 2  # not 1: a batch of 1 would let torch.export specialise the batch dimension to 1


class SegmentationGraph(nn.Module):
    """``model`` with its pre- and post-processing, as one traceable graph.

    With ``preprocess=True`` (default) the input is uint8 images, N×3×H×W (``layout="NCHW"``) or N×H×W×3
    (``"NHWC"``), normalised as ``(x / scale − mean) / std``; with ``preprocess=False`` it is the already
    normalised float N×3×H×W batch. ``output`` picks int64 ``labels`` N×H×W (argmax), float ``logits``
    N×C×H×W or ``probabilities`` (softmax over C).
    """

    def __init__(self, model: nn.Module, *, output: str = "labels", preprocess: bool = True,
                 normalization: Normalization = IMAGENET, layout: str = "NCHW") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout != "NCHW" and not preprocess:
            raise ValueError(f"layout {layout} applies to uint8 images; a normalised float input is always NCHW")
        self.model = model
        self.output, self.preprocess, self.layout = output, preprocess, layout
        self.scale = normalization.scale
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(normalization.std).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.preprocess:
            if self.layout == "NHWC":
                x = x.permute(0, 3, 1, 2)
            x = (x.float() / self.scale - self.mean) / self.std
        logits = self.model(x)
        if self.output == "logits":
            return logits
        if self.output == "probabilities":
            return torch.softmax(logits, dim=1)
        return logits.argmax(dim=1)

    def description(self) -> dict[str, Any]:
        """The input/output contract, stored in exported files' headers."""
        return {"input": "uint8" if self.preprocess else "float32", "layout": self.layout, "output": self.output,
                "output_stride": getattr(self.model, "output_stride", None)}

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
        """A random input of this graph's kind (uint8 images or a standard-normal float batch)."""
        device = self.mean.device
        if not self.preprocess:
            return torch.randn(batch, 3, height, width, generator=generator).to(device)
        shape = (batch, height, width, 3) if self.layout == "NHWC" else (batch, 3, height, width)
        pixel_values = torch.iinfo(torch.uint8).max + 1
        return torch.randint(0, pixel_values, shape, dtype=torch.uint8, generator=generator).to(device)

    def dynamic_dims(self) -> tuple[dict[int, str], dict[int, str]]:
        """Input and output axes that vary: batch, height, width."""
        spatial = (1, 2) if self.layout == "NHWC" else (2, 3)
        inputs = {0: "batch", spatial[0]: "height", spatial[1]: "width"}
        if self.output == "labels":
            return inputs, {0: "batch", 1: "height", 2: "width"}
        return inputs, {0: "batch", 2: "height", 3: "width"}


def build_graph(model: nn.Module, card: ModelCard, *, include_preprocessing: bool = False,
                output: str | None = None, layout: str = "NCHW") -> SegmentationGraph:
    """The graph the exporters trace. ``output`` defaults to labels with preprocessing, logits without."""
    output = output or ("labels" if include_preprocessing else "logits")
    return SegmentationGraph(model, output=output, preprocess=include_preprocessing, layout=layout,
                             normalization=card.normalization).to(model_device(model))


def card_for(model: nn.Module, card: ModelCard | None) -> ModelCard:
    """The card an export writes: the given one, or (an untrained model) the default for its config; a module
    that is not a deeplab model gets an empty card (no config, no class names)."""
    if card is not None:
        return card
    config = getattr(model, "config", None)
    return ModelCard.default(config) if config else ModelCard(config={}, classes=())


def model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the export, then each submodule's own mode back (frozen BN stays frozen)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    # The tracer warns about Python bools it folds (ASPPPooling's training-only batch check) and torch
    # deprecates the TorchScript paths we choose knowingly; check_parity is what proves the graph right.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*(legacy TorchScript-based ONNX|torch\.jit\.(trace|save|load)|"
                                                  r"feature will be removed)", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.(trace|save|load)", category=FutureWarning)
        yield
