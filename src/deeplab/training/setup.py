"""Building a training run from its config: the data (scanned before step 1), the model (ImageNet backbone or a
model file to start from), the optimiser, schedule, scaler and loss, the resumed state, and the loader.

``build_run`` returns a ``TrainingRun`` — everything the loop in ``runner.py`` needs, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from ..config import Config, model_kwargs
from ..data.checks import ScanReport, check_dataset, scan_dataset
from ..data.dataset import SegmentationDataset
from ..data.datasets import build_dataset
from ..data.normalization import Normalization
from ..data.transforms import train_transforms
from ..losses import SegmentationLoss
from ..models.builders import build_model
from ..models.deeplab import DeepLab
from ..utils.distributed import DistInfo
from ..weights import load_backbone_weights
from ..weights.card import ModelCard
from ..weights.modelfile import ModelFile, load_model
from .engine import unwrap
from .optim import build_optimizer, build_scheduler, freeze_batch_norm, set_bn_momentum
from .sampler import AugmentedDataset, TrainSampler
from .state import set_rng_state

Log = Callable[[str], Any]


@dataclass
class TrainingRun:
    """A training run's parts. ``model`` is DDP-wrapped under ``torchrun`` (``net`` is the model itself);
    ``start``, ``best`` and ``spent`` (seconds) come from the checkpoint it resumed, if any."""

    config: Config
    device: torch.device
    info: DistInfo
    log: Log
    model: nn.Module
    card: ModelCard
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler | None
    loss_fn: SegmentationLoss
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    amp: bool
    start: int = 0
    best: float = -math.inf
    spent: float = 0.0

    @property
    def net(self) -> DeepLab:
        return unwrap(self.model)

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


def make_dataset(config: Config, split: str, limit: int | None) -> SegmentationDataset:
    data = config.data
    dataset = build_dataset(data.dataset, root=data.root or None, split=split, images_dir=data.images or None,
                            masks_dir=data.masks or None, classes=list(data.classes) or None)
    return dataset.subset(range(min(limit, len(dataset)))) if limit else dataset


def build_training_model(config: Config, num_classes: int, log: Log) -> DeepLab:
    """The model of ``config.model``: from a model file (``init_weights``, optionally fine-tuned to new classes),
    else with ImageNet backbone weights (``backbone_weights``), else at random; BN momentum set."""
    model = build_model(model_kwargs(config.model, num_classes))
    if config.model.init_weights:
        initial, _ = load_model(config.model.init_weights, num_classes=num_classes, finetune=config.model.finetune)
        model.load_state_dict(initial.state_dict())
        log(f"initialised from {config.model.init_weights}")
    elif config.model.backbone_weights:
        log(f"backbone weights {config.model.backbone_weights}: "
            f"{load_backbone_weights(model, config.model.backbone_weights).summary()}")
    set_bn_momentum(model, config.train.bn_momentum)
    return model


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, then BN back to frozen for the second (OS8) stage of the recipe."""
    model.train()
    if freeze_bn:
        freeze_batch_norm(model)


def build_run(config: Config, device: torch.device, info: DistInfo, log: Log, *, progress: bool,
              check_data: bool) -> TrainingRun:
    """Data, model, optimiser, schedule, scaler and loss of a fresh run (``restore`` then loads a checkpoint)."""
    train_cfg = config.train
    torch.manual_seed(train_cfg.seed)  # the model's initialisation
    train_set = make_dataset(config, config.data.train_split, config.data.max_train_images)
    val_set = make_dataset(config, config.data.val_split, config.data.max_val_images)
    dataset_info = train_set.info
    report = None
    if check_data:
        train_set, report = check_dataset(train_set, dataset_info.num_classes, skip_bad=config.data.skip_bad,
                                          progress=progress and info.is_main, log=log)
    class_weights = _class_weights(train_cfg.class_weights, report, train_set, progress, log)
    model = build_training_model(config, dataset_info.num_classes, log).to(device)
    card = ModelCard(model.config, dataset_info.classes, Normalization(config.data.mean, config.data.std),
                     palette=dataset_info.palette, ignore_index=dataset_info.ignore_index, dataset=dataset_info.name)
    if info.enabled and device.type == "cuda" and train_cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if train_cfg.freeze_bn:
        log(f"freeze-BN: {freeze_batch_norm(model)} batch-norm layers frozen")
    optimizer = build_optimizer(model, lr=train_cfg.lr, momentum=train_cfg.momentum,
                                weight_decay=train_cfg.weight_decay)
    scheduler = build_scheduler(optimizer, max_iterations=train_cfg.iterations, power=train_cfg.poly_power,
                                warmup=train_cfg.warmup_iterations)
    amp = train_cfg.amp and device.type == "cuda"
    loss_fn = SegmentationLoss(ignore_index=dataset_info.ignore_index, class_weights=class_weights,
                               aux_weight=train_cfg.aux_weight).to(device)
    return TrainingRun(config, device, info, log, model, card, optimizer, scheduler,
                       torch.amp.GradScaler("cuda") if amp else None, loss_fn, train_set, val_set, amp)


def restore(run: TrainingRun, path: Path, checkpoint: ModelFile) -> None:
    """Load a checkpoint's weights, optimiser, schedule, scaler, counters and RNG states into ``run``."""
    run.model.load_state_dict(checkpoint.state_dict)
    training = checkpoint.training
    run.optimizer.load_state_dict(training["optimizer"])
    run.scheduler.load_state_dict(training["scheduler"])
    if run.scaler is not None and training.get("scaler"):
        run.scaler.load_state_dict(training["scaler"])
    run.start, run.best, run.spent = training["iteration"], training["best_miou"], training["elapsed"]
    set_rng_state(training["rng"])  # before any DataLoader iterator exists (worker seeds come from it)
    run.log(f"resumed from {path} at step {run.start}")


def distribute(run: TrainingRun) -> None:
    """Wrap the model in DDP under ``torchrun`` (after resuming: the state dict keys are the bare model's)."""
    if run.info.enabled:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        run.model = DistributedDataParallel(run.model, device_ids=device_ids)


def make_loader(run: TrainingRun) -> DataLoader:
    """The endless, sharded, resumable training loader, positioned at ``run.start``."""
    config, train_cfg = run.config, run.config.train
    generator = torch.Generator()
    transform = train_transforms(tuple(config.data.crop_size), tuple(config.data.scale_range), run.card.normalization,
                                 run.card.ignore_index, config.data.jitter, generator, flip=config.data.flip)
    sampler = TrainSampler(len(run.train_set), train_cfg.batch_size, seed=train_cfg.seed, rank=run.info.rank,
                           world_size=run.info.world_size, start_iteration=run.start * train_cfg.grad_accumulation)
    # The loader gets its own generator: its iterator draws the workers' base seed from it and leaves the global
    # torch RNG to dropout, which the loop reseeds every step from (seed, step, rank) — so a resumed run draws
    # the masks an uninterrupted one would, and ranks draw different ones. (Augmentation is seeded per sample by
    # AugmentedDataset, so the workers' seeds do not matter for the data.)
    dataset = AugmentedDataset(run.train_set, transform, generator, train_cfg.seed, run.card.ignore_index)
    workers = config.data.workers
    return DataLoader(dataset, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=run.device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(train_cfg.seed))


def _class_weights(setting: Any, report: ScanReport | None, train_set: SegmentationDataset, progress: bool,
                   log: Log) -> list[float] | None:
    num_classes = train_set.info.num_classes
    if setting is None:
        return None
    if setting == "median":
        if report is None:
            report = scan_dataset(train_set, num_classes, progress=progress)
        weights = report.class_weights()
        log("median-frequency class weights: " + ", ".join("n/a" if w is None else f"{w:.3f}" for w in weights))
        # A class with no training pixels has no frequency; its weight never multiplies a pixel, so 1 is neutral.
        return [1.0 if w is None else float(w) for w in weights]
    if isinstance(setting, str):
        raise ValueError(f"train.class_weights must be null, 'median' or a list of {num_classes} numbers")
    if len(setting) != num_classes:
        raise ValueError(f"train.class_weights has {len(setting)} values for {num_classes} classes")
    return list(setting)
