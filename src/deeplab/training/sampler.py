"""Samplers that make training reproducible, resumable mid-epoch and shardable across ranks.

The training sampler yields ``(epoch, index, copy)``: the permutation of each epoch comes from ``seed +
epoch``, and augmentation draws its randomness from ``(seed, epoch, index, copy)`` (see ``AugmentedDataset``) —
so a sample's crop does not depend on worker count, rank or where a resumed run started, which is what makes
resume bit-exact. ``copy`` counts the repeats of an image that bootstrapping (``repeats``) puts in an epoch, so
each repeat is augmented differently.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


Item = tuple[int, int, int]  # (epoch, dataset index, copy)


class TrainSampler(Sampler[Item]):
    """Endless shuffled epochs, sharded by rank, each rank getting ``batches_per_epoch × batch_size`` items
    (the tail that does not fill a batch on every rank is dropped: BN needs full batches).

    ``repeats[i]`` (default 1 for all) is how many times image ``i`` is in every epoch — the paper's
    bootstrapping of images with hard classes."""

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_iteration: int = 0, repeats: Sequence[int] | None = None) -> None:
        if repeats is not None and (len(repeats) != size or any(r < 1 for r in repeats)):
            raise ValueError(f"repeats must give every one of the {size} images a count >= 1")
        self.slots = [(i, c) for i in range(size) for c in range(repeats[i] if repeats else 1)]
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = len(self.slots) // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training set has {size} images, fewer than one batch of {batch_size} "
                             f"on each of {world_size} process(es); lower train.batch_size")
        self.start_iteration = start_iteration

    def epoch_slots(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's (index, copy) pairs of one epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.slots), generator=generator).tolist()
        used = order[: self.batches_per_epoch * self.batch_size * self.world_size]
        return [self.slots[k] for k in used[self.rank:: self.world_size]]

    def epoch_indices(self, epoch: int) -> list[int]:
        return [index for index, _ in self.epoch_slots(epoch)]

    def __iter__(self) -> Iterator[Item]:
        epoch, batch = divmod(self.start_iteration, self.batches_per_epoch)
        offset = batch * self.batch_size
        while True:
            for index, copy in self.epoch_slots(epoch)[offset:]:
                yield epoch, index, copy
            epoch, offset = epoch + 1, 0


class AugmentedDataset(Dataset):
    """Wraps a dataset with ``read(index) -> (image, label, ...)``; before each sample, the ``generator`` the
    transforms draw from is seeded from ``(seed, epoch, index)``. Each DataLoader worker holds its own copy
    of the generator, and the main process's global RNG is never touched."""

    def __init__(self, dataset: Any, transform: Callable[..., Any], generator: torch.Generator,
                 seed: int = 0, ignore_index: int = 255, num_classes: int | None = None) -> None:
        self.dataset, self.transform, self.generator = dataset, transform, generator
        self.seed, self.ignore_index, self.num_classes = seed, ignore_index, num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Item) -> Any:
        epoch, index, copy = key
        sample = self.dataset.read(index)
        image, label = sample[0], sample[1]
        if label is None:
            label = np.full(image.shape[:2], self.ignore_index, dtype=np.int64)
        elif self.num_classes is not None:
            check_label_values(label, self.num_classes, self.ignore_index,
                               sample[3] if len(sample) > 3 else f"sample {index}")
        self.generator.manual_seed(sample_seed(self.seed, epoch, index, copy))
        return self.transform(image, label)


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int, source: object) -> None:
    """Every label a class or the ignore value — checked as each sample loads (the pre-flight scan may have been
    skipped), so a bad mask stops training naming its file instead of crashing the loss on an index."""
    bad = (label < 0) | ((label >= num_classes) & (label != ignore_index))
    if bad.any():
        values = sorted(np.unique(label[bad]).tolist())[:5]
        raise ValueError(f"{source}: label values {values} are outside 0..{num_classes - 1} and not the ignore "
                         f"value {ignore_index} (run deeplab check-data to list every such file)")


def sample_seed(seed: int, epoch: int, index: int, copy: int = 0) -> int:
    """A well-mixed 63-bit seed for one sample (one of its bootstrapped copies) of one epoch."""
    return mixed_seed(seed, epoch, index) if copy == 0 else mixed_seed(seed, epoch, index, copy)


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
