"""An exponential moving average of the weights (``train.ema_decay``): a shadow copy of the model that every
optimiser step moves a little toward the live weights, ``average ← d · average + (1 − d) · live``.

SGD's iterate keeps moving around the minimum by an amount the learning rate sets; an average of the last few
hundred iterates sits nearer the middle of where it wandered and is often the better model to validate and
ship, at the cost of one extra copy of the weights and one fused multiply-add per step. Batch-norm running
statistics are averaged with the same decay, so the averaged weights are validated with statistics gathered
near them; integer buffers (``num_batches_tracked``) are copied.

The decay ramps up with the number of updates, ``d_n = min(d, (1 + n) / (10 + n))``: an average started at
the ImageNet initialisation would otherwise hold it for thousands of steps of a short schedule. At step n the
average spans roughly the last ``1 / (1 − d_n)`` steps (about ``n / 9`` until the cap is reached).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def check_decay(decay: float | None) -> None:
    """Refuse a decay that cannot average (null: no averaging)."""
    if decay is not None and not 0.0 < decay < 1.0:
        raise ValueError(f"train.ema_decay must be in (0, 1) (e.g. 0.999) or null, got {decay}")


class WeightAverage:
    """The averaged copy (``module``, kept in eval mode, no gradients) of the model it was made from."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        check_decay(decay)
        self.decay, self.updates = float(decay), 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s weights (call after each optimiser step)."""
        live = model.state_dict()
        averaged, current = [], []
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                averaged.append(value)
                current.append(live[name].detach().to(value.dtype))
            else:
                value.copy_(live[name])
        torch._foreach_lerp_(averaged, current, 1.0 - self.current_decay())
        self.updates += 1

    def state(self) -> dict[str, Any]:
        """What a checkpoint records besides the averaged weights themselves."""
        return {"decay": self.decay, "updates": self.updates}

    def restore(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        """Continue an average saved in a checkpoint (``weights``: its state dict, ``updates``: its count)."""
        self.module.load_state_dict(weights)
        self.updates = int(updates)
