"""Samplers that make training reproducible, resumable mid-epoch and shardable: disjoint full batches per rank,
resume at any step, evaluation shards that count every sample once, augmentation seeded by (epoch, index), and
per-step, per-rank dropout seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deeplab.data.transforms import train_transforms
from deeplab.training.sampler import AugmentedDataset, TrainSampler, sample_seed, step_seed
from deeplab.utils.distributed import DistInfo, shard_indices


def _stream(sampler: TrainSampler, count: int) -> list[tuple[int, int, int]]:
    return list(itertools.islice(iter(sampler), count))


@pytest.mark.parametrize("size,batch,world", [(11, 2, 2), (10, 3, 1), (9, 1, 3)])
def test_train_sampler_shards_are_disjoint_full_batches(size: int, batch: int, world: int) -> None:
    per_rank = (size // (batch * world)) * batch
    for epoch in range(3):
        shards = [[index for e, index, _ in _stream(TrainSampler(size, batch, seed=5, rank=r, world_size=world),
                                                  per_rank * 3) if e == epoch] for r in range(world)]
        assert all(len(shard) == per_rank for shard in shards)
        union = [index for shard in shards for index in shard]
        assert len(set(union)) == len(union) == per_rank * world  # disjoint, batches_per_epoch·batch·world items
        assert set(union) <= set(range(size))
    first, second = (TrainSampler(size, batch, seed=5).epoch_indices(e) for e in (0, 1))
    assert first != second  # a new order every epoch


@pytest.mark.parametrize("world", [1, 2])
def test_train_sampler_resumes_mid_epoch(world: int) -> None:
    batch = 2
    for rank in range(world):
        straight = _stream(TrainSampler(11, batch, seed=3, rank=rank, world_size=world), 40)
        for k in (0, 1, 2, 3, 5, 7):  # inside an epoch and on epoch boundaries
            resumed = _stream(TrainSampler(11, batch, seed=3, rank=rank, world_size=world, start_iteration=k), 20)
            assert resumed == straight[k * batch: k * batch + 20], (rank, k)


def test_evaluation_shards_cover_odd_length_once() -> None:
    shards = [shard_indices(7, DistInfo(rank, 2)) for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(7))
    assert [len(shard) for shard in shards] == [4, 3]
    assert shard_indices(7, DistInfo()) == list(range(7))


class _ArrayDataset:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.items = [(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 4, (40, 50)))
                      for _ in range(4)]

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int):
        return self.items[index]


def test_augmentation_depends_only_on_epoch_and_index() -> None:
    def dataset() -> AugmentedDataset:
        generator = torch.Generator()
        return AugmentedDataset(_ArrayDataset(), train_transforms((24, 32), (0.5, 2.0), generator=generator),
                                generator, seed=7)

    global_rng = torch.get_rng_state()
    first = dataset()
    reference = first[(0, 3, 0)]
    for key in [(1, 2, 0), (0, 1, 0), (2, 3, 0)]:  # other samples in between
        first[key]
    again, fresh = first[(0, 3, 0)], dataset()[(0, 3, 0)]
    for other in (again, fresh):
        assert all(torch.equal(a, b) for a, b in zip(reference, other))
    next_epoch = first[(1, 3, 0)]
    second_copy = first[(0, 3, 1)]  # a bootstrapped repeat of the same image is augmented differently
    assert not torch.equal(reference[0], second_copy[0])
    assert not torch.equal(reference[0], next_epoch[0])
    assert torch.equal(torch.get_rng_state(), global_rng)  # the global RNG (dropout's) is untouched


def test_step_seed_gives_each_rank_and_step_its_own_dropout_masks() -> None:
    def mask(iteration: int, rank: int) -> torch.Tensor:
        torch.manual_seed(step_seed(0, iteration, rank))
        return F.dropout(torch.ones(1000), p=0.5) > 0

    assert torch.equal(mask(3, 1), mask(3, 1))  # a resumed run redraws the same masks without saved state
    assert not torch.equal(mask(3, 0), mask(3, 1)) and not torch.equal(mask(3, 0), mask(4, 0))
    assert step_seed(0, 3, 0) != sample_seed(0, 3, 0)


@pytest.mark.parametrize("world", [1, 2])
def test_bootstrapped_images_are_seen_their_number_of_times_per_epoch(world: int) -> None:
    """Images 1 and 4 four times each: 4 + 2·4 = 12 slots = 3 batches of 2 on each of 2 ranks (nothing dropped), so
    every epoch shows them exactly 4 times and the others once, across ranks; resuming mid-epoch continues the
    same stream."""
    repeats = [1, 4, 1, 1, 4, 1]
    for epoch in range(3):
        seen = [index for rank in range(world)
                for e, index, _ in _stream(TrainSampler(6, 2, seed=1, rank=rank, world_size=world, repeats=repeats),
                                           12 // world * 3) if e == epoch]
        assert sorted(seen) == sorted(i for i, r in enumerate(repeats) for _ in range(r))
    straight = _stream(TrainSampler(6, 2, seed=1, repeats=repeats), 30)
    for k in (1, 4, 6, 7):
        assert _stream(TrainSampler(6, 2, seed=1, repeats=repeats, start_iteration=k), 10) == straight[2 * k: 2 * k + 10]
    copies = {(i, c) for _, i, c in straight[:12]}
    assert copies == {(i, c) for i, r in enumerate(repeats) for c in range(r)}  # each repeat a distinct copy
    with pytest.raises(ValueError, match="repeats"):
        TrainSampler(6, 2, repeats=[1, 2])
