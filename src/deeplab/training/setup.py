"""Building a training run from its config: the data (scanned before step 1), the model (ImageNet backbone or a
model file to start from), the optimiser, schedule, scaler and loss, the resumed state, and the loader.

``build_run`` returns a ``TrainingRun`` — everything the loop in ``runner.py`` needs, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from ..config import Config, config_to_dict, model_kwargs
from ..data.checks import check_dataset, scan_dataset
from ..data.dataset import SegmentationDataset
from ..data.normalization import Normalization
from ..inference.loading import load_any
from ..data.transforms import train_transforms
from ..losses import SegmentationLoss
from ..models.registry import build_model
from ..models.deeplab import DeepLab
from ..models.checkpointing import checkpoint_backbone
from ..utils.distributed import DistInfo
from ..weights import load_backbone_weights
from ..weights.card import ModelCard
from ..weights.io import load_weights
from ..weights.modelfile import ModelFile
from .ema import WeightAverage
from .engine import autocast_dtype, bf16_fallback, unwrap
from .optim import build_optimizer, build_scheduler, freeze_batch_norm, set_bn_momentum
from .sampler import AugmentedDataset, TrainSampler
from .splits import Log, bootstrap_repeats, class_weights, training_splits
from .state import set_rng_state

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
    autocast: torch.dtype | None
    repeats: list[int] | None = None  # bootstrapping: how often each training image is in an epoch
    ema: WeightAverage | None = None  # train.ema_decay: the averaged weights, validated and saved
    start: int = 0
    best: float = -math.inf
    spent: float = 0.0

    @property
    def net(self) -> DeepLab:
        return unwrap(self.model)

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


def build_training_model(config: Config, num_classes: int, log: Log) -> DeepLab:
    """The model of ``config.model``: from a model file (``init_weights`` — any file ``-w`` takes, e.g. the
    authors' ``.tflite``; ``finetune`` loads all but the class layers when the classes differ), else with
    ImageNet backbone weights (``backbone_weights``), else at random; BN momentum set."""
    model = build_model(model_kwargs(config.model, num_classes))
    if config.model.init_weights:
        initial = load_any(config.model.init_weights)
        if initial.model is None:
            raise ValueError(f"{config.model.init_weights}: an exported {initial.kind} graph holds no trainable weights")
        report = load_weights(model, initial.model.state_dict(), finetune=config.model.finetune,
                              name=str(config.model.init_weights))
        log(f"initialised from {config.model.init_weights} ({initial.kind}): {report.summary()}")
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
    train_set, val_set = training_splits(config, log)
    dataset_info = train_set.info
    report = None
    if check_data:
        train_set, report = check_dataset(train_set, dataset_info.num_classes, skip_bad=config.data.skip_bad,
                                          progress=progress and info.is_main, log=log)
    if report is None and (train_cfg.class_weights == "median" or config.data.bootstrap_classes):
        report = scan_dataset(train_set, dataset_info.num_classes, progress=progress and info.is_main)
    weights = class_weights(train_cfg.class_weights, report, train_set, log, train_cfg.class_weight_cap)
    repeats = bootstrap_repeats(config.data.bootstrap_classes, config.data.bootstrap_factor, report, log)
    model = build_training_model(config, dataset_info.num_classes, log).to(device)
    card = ModelCard(model.config, dataset_info.classes, Normalization(config.data.mean, config.data.std),
                     palette=dataset_info.palette, ignore_index=dataset_info.ignore_index, dataset=dataset_info.name)
    if info.enabled and device.type == "cuda" and train_cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if train_cfg.freeze_bn:
        log(f"freeze-BN: {freeze_batch_norm(model)} batch-norm layers frozen")
    if train_cfg.activation_checkpointing:
        blocks = checkpoint_backbone(model)
        if not blocks:
            raise ValueError(f"train.activation_checkpointing: the {config.model.backbone} backbone has no residual "
                             "blocks to checkpoint")
        log(f"activation checkpointing: {blocks} backbone blocks recompute their activations in the backward pass")
    optimizer = build_optimizer(model, lr=train_cfg.lr, momentum=train_cfg.momentum,
                                weight_decay=train_cfg.weight_decay, classifier_lr_mult=train_cfg.classifier_lr_mult)
    scheduler = build_scheduler(optimizer, max_iterations=train_cfg.iterations, power=train_cfg.poly_power,
                                warmup=train_cfg.warmup_iterations)
    autocast = autocast_dtype(train_cfg.precision, device)
    if fallback := bf16_fallback(train_cfg.precision, device):
        log(fallback)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None if train_cfg.ema_decay is None else WeightAverage(model, train_cfg.ema_decay)
    if ema is not None:
        log(f"weight averaging: decay {ema.decay} (ramped as (1 + n) / (10 + n) over the first steps); "
            "validation and every checkpoint's model use the averaged weights")
    loss_fn = SegmentationLoss(ignore_index=dataset_info.ignore_index, class_weights=weights,
                               aux_weight=train_cfg.aux_weight).to(device)
    scaler = torch.amp.GradScaler("cuda") if autocast == torch.float16 else None
    return TrainingRun(config, device, info, log, model, card, optimizer, scheduler, scaler, loss_fn, train_set,
                       val_set, autocast, repeats, ema)


# Settings a resumed run may change: they alter when things are logged or saved, not what is trained.
RESUMABLE_CHANGES = ("name", "output_dir", "data.workers", "data.root", "data.images", "data.masks", "data.skip_bad",
                     "model.backbone_weights", "model.init_weights", "train.eval_every", "train.checkpoint_every",
                     "train.log_every", "train.keep_last", "train.time_budget_minutes", "train.stop_after",
                     "train.resume_changes", "train.dist_timeout_s", "train.activation_checkpointing")


def restore(run: TrainingRun, path: Path, checkpoint: ModelFile) -> None:
    """Load a checkpoint's weights, optimiser, schedule, scaler, counters and RNG states into ``run`` — after
    checking it is this run's: the same model (one line naming the keys and shapes that differ otherwise) and
    the same experiment (the changed settings named, old and new)."""
    check_same_experiment(path, checkpoint.training.get("experiment", {}), run.config, run.log)
    training = checkpoint.training
    # With weight averaging the file's model is the average and the live weights ride in the training state.
    load_weights(run.model, training.get("live_weights", checkpoint.state_dict), name=str(path))
    if run.ema is not None:
        if "ema" in training:
            run.ema.restore(checkpoint.state_dict, training["ema"]["updates"])
        else:  # a run without averaging resumed with it (train.resume_changes=warn): start it here
            run.ema.restore(run.net.state_dict(), 0)
    run.optimizer.load_state_dict(training["optimizer"])
    run.scheduler.load_state_dict(training["scheduler"])
    if run.scaler is not None and training.get("scaler"):
        run.scaler.load_state_dict(training["scaler"])
    run.start, run.best, run.spent = training["iteration"], training["best_miou"], training["elapsed"]
    set_rng_state(training["rng"])  # before any DataLoader iterator exists (worker seeds come from it)
    run.log(f"resumed from {path} at step {run.start}")


def check_same_experiment(path: Path, saved: dict[str, Any], config: Config, log: Log) -> None:
    """Refuse (``train.resume_changes: refuse``, the default) or warn (``warn``) when the config differs from
    the one the checkpoint was trained with in anything but logging and saving: a resumed schedule with another
    batch size, length or dataset is no longer the run it claims to be."""
    changes = [f"{key} {old!r} → {new!r}" for key, old, new in _differences(saved, config_to_dict(config))
               if key not in RESUMABLE_CHANGES]
    if not changes:
        return
    listing = "; ".join(changes[:6]) + (f"; ... (+{len(changes) - 6} more)" if len(changes) > 6 else "")
    if config.train.resume_changes == "warn":
        log(f"warning: resuming {path} with changed settings ({listing}): the run continues under the new ones")
        return
    raise ValueError(f"{path} was trained with other settings ({listing}); resume with the same config, start "
                     "fresh under another name (--set name=...), or accept the change with "
                     "--set train.resume_changes=warn")


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", a, b))
    return found


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
                                 run.card.ignore_index, config.data.jitter, generator, flip=config.data.flip,
                                 rotate_degrees=config.data.rotate_degrees)
    sampler = TrainSampler(len(run.train_set), train_cfg.batch_size, seed=train_cfg.seed, rank=run.info.rank,
                           world_size=run.info.world_size, start_iteration=run.start * train_cfg.grad_accumulation,
                           repeats=run.repeats)
    # The loader gets its own generator: its iterator draws the workers' base seed from it and leaves the global
    # torch RNG to dropout, which the loop reseeds every step from (seed, step, rank) — so a resumed run draws
    # the masks an uninterrupted one would, and ranks draw different ones. (Augmentation is seeded per sample by
    # AugmentedDataset, so the workers' seeds do not matter for the data.)
    dataset = AugmentedDataset(run.train_set, transform, generator, train_cfg.seed, run.card.ignore_index,
                               run.card.num_classes)
    workers = config.data.workers
    return DataLoader(dataset, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=run.device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(train_cfg.seed))


def stop_workers(batches: Iterator[Any]) -> None:
    """Ends the loader's worker processes now, whatever ended training: left to the garbage collector — an
    error's traceback holds the iterator in a reference cycle — they outlived a failed run."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # DataLoader offers no public way to do this
    if shutdown is not None:
        shutdown()
