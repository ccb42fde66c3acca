"""Group-held-out validation: split a dataset by a group its file names carry (a video sequence, a city, a
patient), so that no validation image has a near-duplicate in training.

Frames of one drive a second apart are nearly the same picture: a validation split cut from the same drives as
training measures memory of those streets, not segmentation of new ones. ``split_by_group`` holds out whole
groups instead. The group is the first capture group of a regular expression matched against the image's file
stem (CamVid's ``0006R0_f00930`` → ``0006R0``, the dataset's default pattern).
"""

from __future__ import annotations

import re
from collections import Counter

from .dataset import SegmentationDataset


def group_pattern(dataset: SegmentationDataset, pattern: str | None) -> re.Pattern:
    """``pattern`` compiled, or the dataset's own; one-line errors for a missing or group-less pattern."""
    text = pattern or dataset.info.group_pattern
    if not text:
        raise ValueError(f"dataset {dataset.info.name} has no default group pattern: set data.group_pattern to a "
                         r"regular expression whose first group names the sequence, e.g. '^([^_]+)_'")
    try:
        compiled = re.compile(text)
    except re.error as error:
        raise ValueError(f"data.group_pattern {text!r} is not a regular expression ({error})") from None
    if compiled.groups < 1:
        raise ValueError(f"data.group_pattern {text!r} needs a capture group: the part of the name that is the group")
    return compiled


def groups_of(dataset: SegmentationDataset, pattern: re.Pattern) -> list[str]:
    """The group of every sample, in order; a file name the pattern does not match is an error naming it."""
    found = []
    for image, _ in dataset.pairs:
        match = pattern.search(image.stem)
        if match is None:
            raise ValueError(f"{image}: its name does not match the group pattern {pattern.pattern!r}")
        found.append(match.group(1))
    return found


def split_by_group(dataset: SegmentationDataset, held_out: tuple[str, ...] | list[str], pattern: str | None = None
                   ) -> tuple[SegmentationDataset, SegmentationDataset]:
    """``(the samples of every other group, the samples of the held-out groups)``, each in dataset order."""
    groups = _checked_groups(dataset, held_out, pattern)
    if set(held_out) >= set(groups):
        raise ValueError(f"holding out {', '.join(held_out)} leaves no group to train on")
    keep = [i for i, g in enumerate(groups) if g not in held_out]
    out = [i for i, g in enumerate(groups) if g in held_out]
    return dataset.subset(keep), dataset.subset(out)


def select_groups(dataset: SegmentationDataset, chosen: tuple[str, ...] | list[str],
                  pattern: str | None = None) -> SegmentationDataset:
    """The samples of the ``chosen`` groups only (e.g. to evaluate on a held-out sequence)."""
    groups = _checked_groups(dataset, chosen, pattern)
    return dataset.subset([i for i, g in enumerate(groups) if g in chosen])


def _checked_groups(dataset: SegmentationDataset, wanted: tuple[str, ...] | list[str], pattern: str | None
                    ) -> list[str]:
    groups = groups_of(dataset, group_pattern(dataset, pattern))
    counts = Counter(groups)
    unknown = [g for g in wanted if g not in counts]
    if unknown:
        listing = ", ".join(f"{g} ({n})" for g, n in sorted(counts.items()))
        raise ValueError(f"dataset {dataset.info.name}: no group {', '.join(unknown)}; its groups (images): {listing}")
    return groups


def describe_groups(dataset: SegmentationDataset, pattern: str | None = None) -> str:
    """``0001TP 62, 0016E5 204`` — for the log."""
    counts = Counter(groups_of(dataset, group_pattern(dataset, pattern)))
    return ", ".join(f"{g} {n}" for g, n in sorted(counts.items()))
