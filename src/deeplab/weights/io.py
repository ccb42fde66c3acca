"""Reading weight files safely and loading them into models with useful errors.

Every ``torch.load`` here uses ``weights_only=True``: a pickled payload in a downloaded file must not run
code. ``.safetensors`` files are read with safetensors. A file that does not fit the model fails with the
mismatched keys and shapes — or, when fine-tuning to new classes, loads everything but the classifier's
last layer and says which keys it skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]
# Keys of the last (class-count dependent) layers; fine-tuning may skip exactly these.
CLASSIFIER_PREFIXES = ("classifier.", "aux_classifier.")
MAX_LISTED = 6


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the model; the message names the file."""


@dataclass
class LoadReport:
    """What a load did: keys loaded, keys skipped (fine-tuning) and model keys left at their init."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} tensors"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} ({_short(self.skipped)})"
        if self.missing:
            text += f"; kept {len(self.missing)} at initialisation ({_short(self.missing)})"
        return text


def read_file(path: str | os.PathLike) -> Any:
    """Load a ``.pt/.pth`` (``weights_only=True``) or ``.safetensors`` file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and safetensors errors have no common base class
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if refused:
            raise WeightsError(f"{path}: holds code this tool will not run (it pickles {refused.group(1)}, which "
                               "weights have no use for); if you trust the file, re-save its tensors as a state "
                               "dict (torch.save(model.state_dict())) or as safetensors where it was made") from None
        raise WeightsError(f"{path}: not a readable weights file ({type(error).__name__}: "
                           f"{first_sentence(str(error)) or 'no details'})") from None


def first_sentence(text: str, limit: int = 240) -> str:
    """The first line of an error message, shortened at a sentence or clause end, never mid-word."""
    line = next((part.strip() for part in text.strip().splitlines() if part.strip()), "")
    if len(line) <= limit:
        return line
    cut = max(line.rfind(mark, 0, limit) for mark in (". ", "; ", ": ", ", "))
    return (line[:cut + 1] if cut > 0 else line[:line.rfind(" ", 0, limit)]).rstrip(",;: ") + " …"


def read_state_dict(source: str | os.PathLike | Mapping[str, Tensor]) -> StateDict:
    """A flat ``{name: tensor}`` from a path or mapping; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``."""
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    obj = read_file(source) if isinstance(source, (str, os.PathLike)) else source
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{name}: does not hold a state dict of tensors (found {type(obj).__name__})")
    return {str(k): v for k, v in obj.items()}


def load_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Tensor],
    *,
    finetune: bool = False,
    allow_missing: tuple[str, ...] = (),
    name: str | None = None,
) -> LoadReport:
    """Load ``source`` into ``model`` strictly: every key and shape must match.

    ``finetune=True`` loads everything except classifier/aux-classifier tensors whose shape differs (a new
    class count) or which one side lacks (an aux head), and reports them. ``allow_missing`` lists key
    prefixes of the model that may stay at initialisation (e.g. extra cascaded blocks). ``name`` is what
    error messages call the source (callers that read the file themselves pass its path).
    """
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    state = read_state_dict(source)
    expected = model.state_dict()
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    report = LoadReport()
    if finetune:
        report.skipped = [k for k in mismatched + unexpected if k.startswith(CLASSIFIER_PREFIXES)]
        mismatched = [k for k in mismatched if k not in report.skipped]
        unexpected = [k for k in unexpected if k not in report.skipped]
        tolerated = tuple(allow_missing) + CLASSIFIER_PREFIXES
    else:
        tolerated = tuple(allow_missing)
    report.missing = [k for k in missing if tolerated and k.startswith(tolerated)]
    missing = [k for k in missing if k not in report.missing]
    if mismatched or unexpected or missing:
        raise WeightsError(_mismatch_message(name, state, expected, mismatched, unexpected, missing, finetune))
    usable = {k: v for k, v in state.items() if k in expected and k not in report.skipped}
    model.load_state_dict(usable, strict=False)
    report.loaded = list(usable)
    return report


def _mismatch_message(name: str, state: StateDict, expected: Mapping[str, Tensor], mismatched: list[str],
                      unexpected: list[str], missing: list[str], finetune: bool) -> str:
    parts = []
    if mismatched:
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched]
        parts.append(f"{len(mismatched)} shape mismatches ({_short(shapes)})")
    if missing:
        parts.append(f"{len(missing)} model keys not in the file ({_short(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} file keys not in the model ({_short(unexpected)})")
    hint = "" if finetune else "; to fine-tune on other classes, load with finetune=True (--finetune)"
    return f"{name}: does not match the model: " + "; ".join(parts) + hint


def _short(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")
