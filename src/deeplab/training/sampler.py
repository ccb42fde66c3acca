"""Samplers that make training reproducible, resumable mid-epoch and shardable across ranks.

The training sampler yields ``(epoch, index)`` pairs: the permutation of each epoch comes from
``seed + epoch``, and augmentation draws its randomness from ``(seed, epoch, index)`` (see
``AugmentedDataset``) — so a sample's crop does not depend on worker count, rank or where a resumed run
started, which is what makes resume bit-exact.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class TrainSampler(Sampler[tuple[int, int]]):
    """Endless shuffled epochs, sharded by rank, each rank getting ``batches_per_epoch × batch_size`` items
    (the tail that does not fill a batch on every rank is dropped: BN needs full batches)."""

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_iteration: int = 0) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = size // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training set has {size} images, fewer than one batch of {batch_size} "
                             f"on each of {world_size} process(es); lower train.batch_size")
        self.start_iteration = start_iteration

    def epoch_indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        used = order[: self.batches_per_epoch * self.batch_size * self.world_size]
        return used[self.rank:: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, batch = divmod(self.start_iteration, self.batches_per_epoch)
        offset = batch * self.batch_size
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield epoch, index
            epoch, offset = epoch + 1, 0


class AugmentedDataset(Dataset):
    """Wraps a dataset with ``read(index) -> (image, label, ...)``; before each sample, the ``generator`` the
    transforms draw from is seeded from ``(seed, epoch, index)``. Each DataLoader worker holds its own copy
    of the generator, and the main process's global RNG is never touched."""

    def __init__(self, dataset: Any, transform: Callable[..., Any], generator: torch.Generator,
                 seed: int = 0, ignore_index: int = 255) -> None:
        self.dataset, self.transform, self.generator = dataset, transform, generator
        self.seed, self.ignore_index = seed, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        image, label = self.dataset.read(index)[:2]
        if label is None:
            label = np.full(image.shape[:2], self.ignore_index, dtype=np.int64)
        self.generator.manual_seed(sample_seed(self.seed, epoch, index))
        return self.transform(image, label)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    return mixed_seed(seed, epoch, index)


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """The seed of the global torch RNG (dropout) for one training step on one rank: masks differ across
    ranks (one shared seed would give every rank the same masks) and need no saved state to resume exactly."""
    return mixed_seed(seed, 1 << 32, iteration, rank)  # 1 << 32: a stream apart from sample_seed's


def mixed_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from any tuple of non-negative ints (NumPy SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank r takes items r, r + W, ... — no sample counted twice,
    so the reduced confusion matrix equals a single process's on any dataset length."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
