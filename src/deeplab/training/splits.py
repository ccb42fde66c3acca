"""What a run trains and validates on: the configured splits (or a held-out group, or a seeded fraction of a
folder dataset), the class weights from the data scan, and the bootstrapping repeats."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..config import Config
from ..data.checks import ScanReport
from ..data.dataset import SegmentationDataset
from ..data.datasets import build_dataset
from ..data.groups import describe_groups, split_by_group

Log = Callable[[str], Any]


TRAINING_SPLITS = {"voc": ("train", "val"), "camvid": ("train", "val"), "cityscapes": ("train", "val")}


def make_dataset(config: Config, split: str | None, limit: int | None) -> SegmentationDataset:
    data = config.data
    dataset = build_dataset(data.dataset, root=data.root or None, split=split, images_dir=data.images or None,
                            masks_dir=data.masks or None, classes=list(data.classes) or None,
                            ignore_index=data.ignore_index, label_map=data.label_map)
    return dataset.subset(range(min(limit, len(dataset)))) if limit else dataset


def training_splits(config: Config, log: Log) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, validation): the configured splits, or with ``data.holdout_groups`` the training split without
    those groups and the held-out groups as validation."""
    data = config.data
    train_split, val_split = data.train_split, data.val_split
    if data.dataset in TRAINING_SPLITS:
        train_split, val_split = train_split or TRAINING_SPLITS[data.dataset][0], val_split or TRAINING_SPLITS[data.dataset][1]
    if data.dataset == "folder" and not val_split and not data.holdout_groups:
        return _fraction_split(config, make_dataset(config, train_split, None), log)
    if not data.holdout_groups:
        return (make_dataset(config, train_split, data.max_train_images),
                make_dataset(config, val_split, data.max_val_images))
    whole = make_dataset(config, train_split, None)
    train_set, val_set = split_by_group(whole, data.holdout_groups, data.group_pattern)
    log(f"validating on held-out group(s) {describe_groups(val_set, data.group_pattern)} of {train_split}; "
        f"training on {describe_groups(train_set, data.group_pattern)}")
    if data.max_train_images:
        train_set = train_set.subset(range(min(data.max_train_images, len(train_set))))
    if data.max_val_images:
        val_set = val_set.subset(range(min(data.max_val_images, len(val_set))))
    return train_set, val_set


def _fraction_split(config: Config, whole: SegmentationDataset, log: Log
                    ) -> tuple[SegmentationDataset, SegmentationDataset]:
    """A folder dataset without a val split: ``data.val_fraction`` of its pairs, drawn with ``train.seed``."""
    fraction = config.data.val_fraction
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    count = len(whole)
    held = max(1, round(fraction * count))
    if held >= count:
        raise ValueError(f"data.val_fraction={fraction:g} of {count} image(s) leaves nothing to train on")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(config.train.seed)).tolist()
    val_set, train_set = whole.subset(sorted(order[:held])), whole.subset(sorted(order[held:]))
    log(f"no val split given: validating on {held} of {count} pairs (data.val_fraction={fraction:g}, seed "
        f"{config.train.seed}), training on {count - held}")
    limit_train, limit_val = config.data.max_train_images, config.data.max_val_images
    if limit_train:
        train_set = train_set.subset(range(min(limit_train, len(train_set))))
    if limit_val:
        val_set = val_set.subset(range(min(limit_val, len(val_set))))
    return train_set, val_set


def bootstrap_repeats(classes: tuple[str, ...], factor: int, report: ScanReport | None, log: Log) -> list[int] | None:
    """How many times each training image is in an epoch: ``factor`` for the images with any of ``classes``
    (the paper duplicates the VOC images with bicycles, chairs, tables, plants and sofas), 1 for the rest."""
    if not classes:
        return None
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"data.bootstrap_factor must be a whole number >= 1, got {factor!r}")
    names = list(report.class_names)
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ValueError(f"data.bootstrap_classes: {', '.join(unknown)} not among the classes ({', '.join(names)})")
    chosen = set(report.images_with([names.index(c) for c in classes]))
    log(f"bootstrapping: {len(chosen)} of {len(report.good_indices)} images with {', '.join(classes)} "
        f"repeated {factor}x per epoch")
    return [factor if k in chosen else 1 for k in range(len(report.good_indices))]


def class_weights(setting: Any, report: ScanReport | None, train_set: SegmentationDataset, log: Log,
                  cap: float | None = None) -> list[float] | None:
    """The loss's class weights: none, median-frequency balancing from the data scan (optionally clipped to
    ``[1/cap, cap]``: full balancing starves the large classes — CamVid's Building gets 0.19 — and floods the
    thin ones), or explicit numbers."""
    num_classes = train_set.info.num_classes
    if setting is None:
        return None
    if setting == "median":
        # A class with no training pixels has no frequency; its weight never multiplies a pixel, so 1 is neutral.
        weights = [1.0 if w is None else float(w) for w in report.class_weights()]
        if cap is not None:
            if not cap >= 1.0:
                raise ValueError(f"train.class_weight_cap must be >= 1 (weights are clipped to [1/cap, cap]), got {cap}")
            weights = [min(max(w, 1.0 / cap), cap) for w in weights]
        log("median-frequency class weights" + (f" clipped to [1/{cap:g}, {cap:g}]" if cap else "") + ": "
            + ", ".join(f"{w:.3f}" for w in weights))
        return weights
    if isinstance(setting, str):
        raise ValueError(f"train.class_weights must be null, 'median' or a list of {num_classes} numbers")
    if len(setting) != num_classes:
        raise ValueError(f"train.class_weights has {len(setting)} values for {num_classes} classes")
    return list(setting)
