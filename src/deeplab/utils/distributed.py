"""Distributed helpers for runs launched by ``torchrun`` (DDP; gloo on CPU, NCCL on GPU).

A run is distributed when torchrun's environment variables are present. Only rank 0 writes files; the
evaluation's confusion matrices are summed across ranks. An explicit process-group timeout makes a dead
peer fail the job instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 600.0
PEER_FAILURE_MARKS = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout",
                      "processgroup", "broken pipe")


class PeerFailure(RuntimeError):
    """A collective failed because another process of the job died or stopped answering; the message names
    this rank and the timeout."""


def peer_failure(error: RuntimeError, info: "DistInfo", timeout_s: float) -> PeerFailure | None:
    """The one-line PeerFailure an error of a collective means, or None for any other RuntimeError."""
    text = str(error).strip()
    if not info.enabled or not any(mark in text.lower() for mark in PEER_FAILURE_MARKS):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)[:200]
    return PeerFailure(f"rank {info.rank} of {info.world_size} lost its peers ({first}): a process of the job died "
                       f"(its launcher's log names the rank) or did not answer within {timeout_s:g} s "
                       "(train.dist_timeout_s)")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def shard_indices(count: int, info: DistInfo) -> list[int]:
    """This rank's share of ``count`` items: ``rank, rank + W, ...`` — without padding, so no item is done twice
    and a sum over ranks equals one process's result on any length."""
    return list(range(info.rank, count, info.world_size))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the process group torchrun set up (no-op for a single process); a collective that waits longer
    than ``timeout_s`` for a peer fails instead of hanging the job."""
    if not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if info.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return info


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor across ranks in place (works for int64 confusion matrices on gloo and NCCL)."""
    if info.enabled:
        buffer = tensor.to(_collective_device(info))
        dist.all_reduce(buffer)
        tensor.copy_(buffer.cpu())
    return tensor


def _collective_device(info: DistInfo) -> torch.device:
    return torch.device("cuda", info.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_across_ranks(value: float, info: DistInfo) -> float:
    """The mean of a number over all ranks (e.g. the logged training loss); every rank must call it."""
    if not info.enabled:
        return value
    buffer = torch.tensor([value], dtype=torch.float64, device=_collective_device(info))
    dist.all_reduce(buffer)
    return buffer.item() / info.world_size


def broadcast_from_main(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Rank 0's value of ``tensor`` on every rank (for decisions all ranks must take together)."""
    if info.enabled:
        buffer = tensor.to(_collective_device(info))
        dist.broadcast(buffer, src=0)
        tensor.copy_(buffer.cpu())
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
