"""Resumable training checkpoints: a deeplab model file plus the training state.

A checkpoint is a model file (``deeplab.weights.modelfile``) — ``load_model(checkpoint)`` works for
prediction and evaluation — with a ``training`` entry holding the optimizer, scheduler, scaler, iteration,
best metric, the experiment config and every RNG state (Python, NumPy, torch, CUDA), all as plain containers
and tensors so ``torch.load(weights_only=True)`` reads them. Writes are atomic and the payload's digest is
checked on load; auto-resume picks the newest checkpoint that loads and verifies.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..models.deeplab import DeepLab
from ..weights.card import ModelCard
from ..weights.io import WeightsError
from ..weights.modelfile import ModelFile, read_model_file, write_model_file

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


def save_training_checkpoint(path: str | os.PathLike, *, model: DeepLab, card: ModelCard,
                             training: dict[str, Any]) -> Path:
    """Write a checkpoint atomically; ``training`` holds optimizer/scheduler/scaler state dicts etc."""
    return write_model_file(path, model, card, training={**training, "rng": rng_state()})


def load_training_checkpoint(path: str | os.PathLike) -> ModelFile:
    file = read_model_file(path)
    if file.training is None:
        raise WeightsError(f"{path}: not a deeplab training checkpoint (no training state to resume)")
    return file


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint_<iteration>.pt`` files of a run, newest first."""
    run_dir = Path(run_dir)
    found = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint_*.pt") if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_valid_checkpoint(run_dir: str | os.PathLike, log: Callable[[str], Any] | None = None
                            ) -> tuple[Path, ModelFile] | None:
    """The newest checkpoint that loads and matches its checksum (a damaged one — truncated by a kill, bytes
    changed by a disk failure — is passed over, and reported through ``log``)."""
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
