"""Peak memory of a training step, measured without the memory: the model, a batch and two SGD steps run on
fake tensors (shapes and dtypes, no data, no arithmetic), while torch's ``MemTracker`` adds up every tensor
alive at each moment — parameters, gradients, optimiser state, activations saved for the backward pass and
temporaries. So the paper's OS8, batch 8, 513² ResNet-101 step can be stated (and its activation-checkpointed
variant compared) on a machine that could not hold it; the figure is tensor memory, like
``torch.cuda.max_memory_allocated``, without the allocator's caching or library workspaces.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.checkpointing import checkpoint_backbone

GIB = 1 << 30


def training_peak_bytes(build: Callable[[], nn.Module], *, batch: int, size: tuple[int, int], num_classes: int,
                        output_stride: int | None = None, checkpointing: bool = False) -> dict[str, int]:
    """Peak bytes of two training steps (forward, cross-entropy, backward, SGD with momentum) of the model
    ``build()`` makes, by kind: parameters, gradients, optimiser state, activations, temporaries, total."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    with FakeTensorMode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Module is None", UserWarning)  # the tracker's hooks of a freed model
        model = build().train()
        if checkpointing:
            checkpoint_backbone(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        images = torch.randn(batch, 3, *size)
        labels = torch.randint(0, num_classes, (batch, *size))
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker, model.at_output_stride(output_stride):
            for _ in range(2):  # the second step has the momentum buffers
                out = model(images)
                loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                tracker.reset_mod_stats()  # per-module figures are per call; the peak is kept
        peak = tracker.get_tracker_snapshot("peak")
    (by_kind,) = peak.values()
    return {str(getattr(kind, "value", kind)).lower(): int(value) for kind, value in by_kind.items()}
