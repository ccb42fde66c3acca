"""``run_training(config)``: everything around the loop — data, model, optimiser, resume, logging, plots.

Launch with ``deeplab train -c configs/x.yaml`` (one process) or ``torchrun --nproc-per-node N -m deeplab
train ...`` (DDP). Only rank 0 writes; every rank reads the same data in a disjoint shard. ``train.stop_after``
ends an invocation after N steps as a kill would (for chunked jobs and the resume tests); running again
resumes from the newest checkpoint on the same schedule.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, config_to_dict, model_kwargs, save_config
from ..data.checks import check_dataset
from ..data.datasets import SegmentationDataset, build_dataset
from ..data.transforms import eval_transforms, train_transforms
from ..engine import Stopwatch, TrainingDiverged, evaluate, train_one_step, unwrap
from ..fileio import ensure_writable_dir
from ..losses import SegmentationLoss
from ..models.builders import build_model
from .distributed import DistInfo, barrier, broadcast_from_main, cleanup, init_distributed, mean_across_ranks
from .logbook import Logbook
from .optim import build_optimizer, build_scheduler, freeze_batch_norm, set_bn_momentum
from .sampler import AugmentedDataset, ShardSampler, TrainSampler, step_seed
from .state import (latest_valid_checkpoint, list_checkpoints, load_training_checkpoint, prune_checkpoints,
                    save_training_checkpoint, set_rng_state)


def make_dataset(config: Config, split: str, limit: int | None) -> SegmentationDataset:
    data = config.data
    dataset = build_dataset(data.dataset, root=data.root or None, split=split, images_dir=data.images or None,
                            masks_dir=data.masks or None, classes=list(data.classes) or None)
    return dataset.subset(range(min(limit, len(dataset)))) if limit else dataset


def build_training_model(config: Config, num_classes: int, log) -> torch.nn.Module:
    from ..checkpoint import load_model
    from ..weights import load_backbone_weights

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


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        freeze_batch_norm(model)


def run_training(config: Config, *, resume: str | None = "auto", progress: bool = True,
                 check_data: bool = True) -> dict[str, Any]:
    """Train per ``config``; returns the final metrics. ``resume``: "auto" (newest valid checkpoint in the
    run folder), a checkpoint path, or None (start fresh; refuses a folder that already has checkpoints)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    log = print if info.is_main else (lambda *_: None)
    train_cfg, run_dir = config.train, config.run_dir
    try:
        check_train_settings(config)
        if info.is_main:
            ensure_writable_dir(run_dir)
        if resume is None:
            _refuse_earlier_run(run_dir)
        return _run(config, train_cfg, run_dir, device, info, log, resume, progress, check_data)
    finally:
        cleanup(info)


def check_train_settings(config: Config) -> None:
    """Settings that cannot work, refused before any data is read or a step is taken (one-line errors)."""
    train = config.train
    if train.stop_after is not None and train.stop_after < 1:
        raise ValueError(f"train.stop_after must be a positive number of steps or null, got {train.stop_after}")
    for key in ("iterations", "batch_size", "grad_accumulation", "eval_every", "checkpoint_every", "log_every",
                "keep_last"):
        if getattr(train, key) < 1:
            raise ValueError(f"train.{key} must be >= 1, got {getattr(train, key)}")
    # ASPP's image-pooling branch pools each image to one value per channel, so its batch norm sees
    # ``batch_size`` values per process (RELIABILITY.md "Batch of one in training"). The model refuses a
    # 1-image batch at the first forward pass; say so before the dataset scan and model build instead.
    if config.model.image_pooling and not train.freeze_bn and train.batch_size < 2:
        raise ValueError(f"train.batch_size={train.batch_size}: the ASPP image-pooling batch norm cannot train on "
                         "1 image per process; use train.batch_size >= 2, train.freeze_bn=true or "
                         "model.image_pooling=false")


def _run(config: Config, train_cfg, run_dir: Path, device: torch.device, info: DistInfo, log, resume, progress,
         check_data) -> dict[str, Any]:
    torch.manual_seed(train_cfg.seed)
    train_set = make_dataset(config, config.data.train_split, config.data.max_train_images)
    val_set = make_dataset(config, config.data.val_split, config.data.max_val_images)
    dataset_info = train_set.info
    num_classes = dataset_info.num_classes
    report = None
    if check_data:
        train_set, report = check_dataset(train_set, num_classes, skip_bad=config.data.skip_bad,
                                          progress=progress and info.is_main, log=log)
    class_weights = _class_weights(train_cfg.class_weights, report, train_set, num_classes, progress, log)

    model = build_training_model(config, num_classes, log).to(device)
    model_config = dict(model.config)
    if info.enabled and device.type == "cuda" and train_cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if train_cfg.freeze_bn:
        log(f"freeze-BN: {freeze_batch_norm(model)} batch-norm layers frozen")
    optimizer = build_optimizer(model, lr=train_cfg.lr, momentum=train_cfg.momentum,
                                weight_decay=train_cfg.weight_decay)
    scheduler = build_scheduler(optimizer, max_iterations=train_cfg.iterations, power=train_cfg.poly_power,
                                warmup=train_cfg.warmup_iterations)
    amp = train_cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    loss_fn = SegmentationLoss(ignore_index=dataset_info.ignore_index, class_weights=class_weights,
                               aux_weight=train_cfg.aux_weight).to(device)

    start, best, spent = 0, float("-inf"), 0.0
    checkpoint = _find_resume(run_dir, resume, log)
    if checkpoint is not None:
        path, payload = checkpoint
        model.load_state_dict(payload["state_dict"])
        training = payload["training"]
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        if scaler is not None and training.get("scaler"):
            scaler.load_state_dict(training["scaler"])
        start, best, spent = training["iteration"], training["best_miou"], training["elapsed"]
        set_rng_state(training["rng"])  # before any DataLoader iterator exists (worker seeds come from it)
        log(f"resumed from {path} at step {start}")
    elif resume not in (None, "auto"):
        raise FileNotFoundError(f"{resume}: no checkpoint to resume from")

    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    metadata = {"classes": list(dataset_info.classes), "palette": [list(c) for c in dataset_info.palette],
                "ignore_index": dataset_info.ignore_index, "mean": list(config.data.mean),
                "std": list(config.data.std), "dataset": dataset_info.name}

    generator = torch.Generator()
    transform = train_transforms(tuple(config.data.crop_size), tuple(config.data.scale_range), config.data.mean,
                                 config.data.std, dataset_info.ignore_index, config.data.jitter, generator,
                                 flip=config.data.flip)
    sampler = TrainSampler(len(train_set), train_cfg.batch_size, seed=train_cfg.seed, rank=info.rank,
                           world_size=info.world_size, start_iteration=start * train_cfg.grad_accumulation)
    # The loader gets its own generator: its iterator draws the workers' base seed from it and leaves the global
    # torch RNG to dropout, which the loop reseeds every step from (seed, step, rank) — so a resumed run draws
    # the masks an uninterrupted one would, and ranks draw different ones. (Augmentation is seeded per sample by
    # AugmentedDataset, so the workers' seeds do not matter for the data.)
    loader = DataLoader(AugmentedDataset(train_set, transform, generator, train_cfg.seed, dataset_info.ignore_index),
                        batch_size=train_cfg.batch_size, sampler=sampler, num_workers=config.data.workers,
                        pin_memory=device.type == "cuda", persistent_workers=config.data.workers > 0,
                        generator=torch.Generator().manual_seed(train_cfg.seed))
    val_set.transform = eval_transforms(config.data.mean, config.data.std)
    val_loader = DataLoader(val_set, batch_size=1, sampler=ShardSampler(len(val_set), info.rank, info.world_size),
                            num_workers=config.data.workers)

    logbook = Logbook(run_dir, dataset_info.classes, enabled=info.is_main, resume_from=start)
    if info.is_main:
        save_config(config, run_dir / "config.yaml")
    stopwatch = Stopwatch(train_cfg.time_budget_minutes, spent)
    batches = iter(loader)
    set_train_mode(model, train_cfg.freeze_bn)
    bar = tqdm(total=train_cfg.iterations, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=not (progress and info.is_main))
    window: list[float] = []
    window_start, window_images = time.monotonic(), 0
    iteration, result = start, {}

    def save(step: int, tag: str | None = None) -> None:
        if not info.is_main:
            return
        bad = [name for name, value in unwrap(model).state_dict().items()
               if value.is_floating_point() and not torch.isfinite(value).all()]
        if bad:  # a finite loss with overflowing gradients: never let such weights become "the last good checkpoint"
            raise TrainingDiverged(f"non-finite weights after step {step} ({', '.join(bad[:3])}"
                                   f"{', ...' if len(bad) > 3 else ''}; lr {optimizer.param_groups[0]['lr']:.3g}); "
                                   "stopping without overwriting the last good checkpoint — lower train.lr")
        training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler else {}, "iteration": step, "best_miou": best,
                    "elapsed": stopwatch.elapsed, "experiment": config_to_dict(config)}
        path = run_dir / (tag or f"checkpoint_{step:07d}.pt")
        save_training_checkpoint(path, model=unwrap(model), model_config=model_config, metadata=metadata,
                                 training=training)
        if tag is None:
            prune_checkpoints(run_dir, train_cfg.keep_last)

    def validate(step: int) -> dict[str, Any]:
        nonlocal best
        net = unwrap(model)
        train_stride, eval_stride = net.output_stride, train_cfg.eval_output_stride
        if eval_stride and eval_stride != train_stride:  # e.g. train at OS16, evaluate at OS8 (paper §4.3)
            net.set_output_stride(eval_stride)
        try:
            matrix = evaluate(net, val_loader, num_classes, dataset_info.ignore_index, device, info,
                              progress=progress)
        finally:
            if net.output_stride != train_stride:
                net.set_output_stride(train_stride)
        set_train_mode(model, train_cfg.freeze_bn)
        summary = matrix.summary(dataset_info.classes)
        logbook.evaluation(step, matrix)
        log(f"\nstep {step}: val mIoU {100 * summary['miou']:.2f} %, pixel acc {100 * summary['pixel_accuracy']:.2f} %")
        if summary["miou"] > best:
            best = summary["miou"]
            save(step, "best.pt")
        return summary

    stop_at = train_cfg.iterations if train_cfg.stop_after is None else min(train_cfg.iterations,
                                                                             start + train_cfg.stop_after)
    while iteration < stop_at and not out_of_time(stopwatch, info):
        micro = [next(batches) for _ in range(train_cfg.grad_accumulation)]
        torch.manual_seed(step_seed(train_cfg.seed, iteration, info.rank))
        step = train_one_step(model, micro, loss_fn, optimizer, scheduler, scaler, device, amp=amp,
                              iteration=iteration, info=info)
        iteration += 1
        window.append(step.loss)
        window_images += step.images * info.world_size
        bar.update()
        if iteration % train_cfg.log_every == 0 or iteration == train_cfg.iterations:
            rate = window_images / max(time.monotonic() - window_start, 1e-9)
            loss = mean_across_ranks(sum(window) / len(window), info)  # every rank logs at the same steps
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{step.lr:.2e}", img_s=f"{rate:.2f}")
            logbook.training(iteration, loss, step.lr, rate)
            window, window_start, window_images = [], time.monotonic(), 0
        if iteration % train_cfg.eval_every == 0:
            result = validate(iteration)
        if iteration % train_cfg.checkpoint_every == 0:
            save(iteration)
    bar.close()
    if iteration < train_cfg.iterations and iteration == stop_at:
        # train.stop_after: leave the run as a kill would (last periodic checkpoint, no final eval or save).
        log(f"stopped after {iteration - start} step(s) at step {iteration} (train.stop_after); "
            "run again to resume from the newest checkpoint")
        barrier(info)
        logbook.close()
        return {"iteration": iteration, "stopped": True, "best_miou": best}
    if stopwatch.expired() and iteration < train_cfg.iterations:
        log(f"time budget of {train_cfg.time_budget_minutes} min spent at step {iteration}")
    if iteration % train_cfg.eval_every != 0 or not result:
        result = validate(iteration)
    if iteration % train_cfg.checkpoint_every != 0:
        save(iteration)
    barrier(info)
    result = {**result, "iteration": iteration, "elapsed_minutes": stopwatch.elapsed / 60, "best_miou": best}
    logbook.finish(result)
    return result


def out_of_time(stopwatch: Stopwatch, info: DistInfo) -> bool:
    """The time-budget decision, taken by rank 0 for all ranks: ranks whose clocks disagreed would otherwise
    leave the loop at different steps and wait on each other's collectives until the timeout."""
    if stopwatch.budget is None:
        return False
    flag = torch.tensor([int(stopwatch.expired())])
    return bool(broadcast_from_main(flag, info).item())


def _find_resume(run_dir: Path, resume: str | None, log=print) -> tuple[Path, dict] | None:
    if resume is None:
        _refuse_earlier_run(run_dir)
        return None
    if resume == "auto":
        return latest_valid_checkpoint(run_dir, log=log)
    return Path(resume), load_training_checkpoint(resume)


def _refuse_earlier_run(run_dir: Path) -> None:
    """A fresh start in a folder with checkpoints would mix two runs: pruning would delete the new run's
    checkpoints (the old ones have higher step numbers) and the next auto-resume would pick the old run."""
    existing = list_checkpoints(run_dir)
    if existing:
        raise FileExistsError(f"{run_dir} already holds checkpoints of an earlier run (newest {existing[0].name}); "
                              "resume it, choose another name or output_dir, or delete them")


def _class_weights(setting, report, train_set, num_classes: int, progress: bool, log) -> list[float] | None:
    if setting is None:
        return None
    if setting == "median":
        if report is None:
            from ..data.checks import scan_dataset

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
