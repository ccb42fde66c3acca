"""Resumable training checkpoints: a deeplab model file plus the training state.

A checkpoint is a superset of ``deeplab.checkpoint.save_model``'s format — ``load_model(checkpoint)`` works
for prediction and evaluation — with a ``training`` entry holding the optimizer, scheduler, scaler,
iteration, best metric, the experiment config and every RNG state (Python, NumPy, torch, CUDA), all as plain
containers and tensors so ``torch.load(weights_only=True)`` reads them. Writes are atomic; auto-resume picks
the newest checkpoint that loads.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..checkpoint import FORMAT_VERSION, MODEL_FORMAT
from ..fileio import atomic_torch_save
from ..weights.io import WeightsError, read_file

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore all generators. Call before building the DataLoader iterator: worker seeds come from torch."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, model_config: dict[str, Any],
                             metadata: dict[str, Any], training: dict[str, Any]) -> Path:
    """Write a checkpoint atomically; ``training`` holds optimizer/scheduler/scaler state dicts etc."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "code_version": __version__,
               "config": model_config, "metadata": metadata, "state_dict": state,
               "training": {**training, "rng": rng_state()}}
    return atomic_torch_save(payload, path)


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    payload = read_file(path)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT or "training" not in payload:
        raise WeightsError(f"{path}: not a deeplab training checkpoint (no training state to resume)")
    return payload


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint_<iteration>.pt`` files of a run, newest first."""
    run_dir = Path(run_dir)
    found = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint_*.pt") if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_valid_checkpoint(run_dir: str | os.PathLike, log: Callable[[str], Any] | None = None
                            ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads (a damaged one — e.g. from a disk failure — is passed over, and
    reported through ``log``)."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_training_checkpoint(path)
        except (WeightsError, OSError) as error:
            if log is not None:
                log(f"skipping damaged checkpoint {error}")
            continue
    return None


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> None:
    for stale in list_checkpoints(run_dir)[keep_last:]:
        stale.unlink(missing_ok=True)
