"""``run_training(config)``: the training loop and what happens at its checkpoints — validation, saving, logging.

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
from tqdm import tqdm

from ..config import Config, config_to_dict, save_config
from ..inference.evaluation import evaluate
from ..inference.predictor import Predictor
from ..losses import check_top_k, mining_fraction
from ..metrics import ConfusionMatrix
from ..models.deeplab import DeepLab
from ..utils.distributed import (DistInfo, barrier, broadcast_from_main, cleanup, init_distributed,
                                 mean_across_ranks, peer_failure)
from ..utils.files import ensure_writable_dir
from .ema import check_decay
from .engine import Stopwatch, TrainingDiverged, autocast_dtype, train_one_step
from .logbook import Logbook
from .sampler import step_seed
from .setup import TrainingRun, build_run, distribute, make_loader, restore, set_train_mode, stop_workers
from .state import latest_valid_checkpoint, list_checkpoints, load_training_checkpoint, prune_checkpoints, \
    save_training_checkpoint


def run_training(config: Config, *, resume: str | None = "auto", progress: bool = True,
                 check_data: bool = True) -> dict[str, Any]:
    """Train per ``config``; returns the final metrics. ``resume``: "auto" (newest valid checkpoint in the
    run folder), a checkpoint path, or None (start fresh; refuses a folder that already has checkpoints)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = init_distributed(device, config.train.dist_timeout_s)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    log = print if info.is_main else (lambda *_: None)
    try:
        check_train_settings(config)
        autocast_dtype(config.train.precision, device)  # an impossible precision fails before any work
        if info.is_main:
            ensure_writable_dir(config.run_dir, keep=False)  # created when training starts, not if refused
        if resume is None:
            refuse_earlier_run(config.run_dir)
        run = build_run(config, device, info, log, progress=progress, check_data=check_data)
        if resume is not None:
            found = (latest_valid_checkpoint(config.run_dir, log=log) if resume == "auto"
                     else (Path(resume), load_training_checkpoint(resume)))
            if found is not None:
                restore(run, *found)
        distribute(run)
        return train(run, progress)
    except RuntimeError as error:
        failure = peer_failure(error, info, config.train.dist_timeout_s)
        if failure is None:
            raise
        raise failure from None
    finally:
        cleanup(info)


def check_train_settings(config: Config) -> None:
    """Settings that cannot work, refused before any data is read or a step is taken (one-line errors)."""
    train_cfg = config.train
    if train_cfg.stop_after is not None and train_cfg.stop_after < 1:
        raise ValueError(f"train.stop_after must be a positive number of steps or null, got {train_cfg.stop_after}")
    for key in ("iterations", "batch_size", "grad_accumulation", "eval_every", "checkpoint_every", "log_every",
                "keep_last"):
        if getattr(train_cfg, key) < 1:
            raise ValueError(f"train.{key} must be >= 1, got {getattr(train_cfg, key)}")
    # ASPP's image-pooling branch pools each image to one value per channel, so its batch norm sees
    # ``batch_size`` values per process and cannot train on one. The model refuses a 1-image batch at the
    # first forward pass; say so before the dataset scan and model build instead. (v1/v2 have no pooling.)
    pooled = config.model.arch in ("deeplabv3", "deeplabv3plus") and config.model.image_pooling is not False
    if train_cfg.resume_changes not in ("refuse", "warn"):
        raise ValueError(f"train.resume_changes must be refuse or warn, got {train_cfg.resume_changes!r}")
    check_decay(train_cfg.ema_decay)
    check_top_k(train_cfg.top_k_pixels, train_cfg.top_k_ramp_iterations)
    if not train_cfg.dist_timeout_s > 0:
        raise ValueError(f"train.dist_timeout_s must be a positive number of seconds, got {train_cfg.dist_timeout_s}")
    if pooled and not train_cfg.freeze_bn and train_cfg.batch_size < 2:
        raise ValueError(f"train.batch_size={train_cfg.batch_size}: the ASPP image-pooling batch norm cannot train "
                         "on 1 image per process; use train.batch_size >= 2, train.freeze_bn=true or "
                         "model.image_pooling=false")


def refuse_earlier_run(run_dir: Path) -> None:
    """A fresh start in a folder with checkpoints would mix two runs: pruning would delete the new run's
    checkpoints (the old ones have higher step numbers) and the next auto-resume would pick the old run."""
    existing = list_checkpoints(run_dir)
    if existing:
        raise FileExistsError(f"{run_dir} already holds checkpoints of an earlier run (newest {existing[0].name}); "
                              "resume it, choose another name or output_dir, or delete them")


def train(run: TrainingRun, progress: bool) -> dict[str, Any]:
    """The loop: steps until the schedule ends, ``stop_after`` steps were taken or the time budget is spent;
    log, validate and save at their intervals; then the final validation and checkpoint."""
    cfg, info = run.config.train, run.info
    if info.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    logbook = Logbook(run.run_dir, run.card.classes, enabled=info.is_main, resume_from=run.start)
    if info.is_main:
        save_config(run.config, run.run_dir / "config.yaml")
    stopwatch = Stopwatch(cfg.time_budget_minutes, run.spent)
    batches = iter(make_loader(run))
    try:
        return steps(run, batches, logbook, stopwatch, progress)
    finally:
        stop_workers(batches)


def steps(run: TrainingRun, batches, logbook: Logbook, stopwatch: Stopwatch, progress: bool) -> dict[str, Any]:
    cfg, info = run.config.train, run.info
    set_train_mode(run.model, cfg.freeze_bn)
    meter = RateMeter()
    iteration, result = run.start, {}
    stop_at = cfg.iterations if cfg.stop_after is None else min(cfg.iterations, run.start + cfg.stop_after)
    bar = tqdm(total=cfg.iterations, initial=run.start, desc="train", unit="step", dynamic_ncols=True,
               disable=not (progress and info.is_main))
    while iteration < stop_at and not out_of_time(stopwatch, info):
        waited = time.monotonic()
        micro = [next(batches) for _ in range(cfg.grad_accumulation)]
        meter.waited(time.monotonic() - waited)
        torch.manual_seed(step_seed(cfg.seed, iteration, info.rank))
        run.loss_fn.keep_fraction = mining_fraction(cfg.top_k_pixels, cfg.top_k_ramp_iterations, iteration)
        step = train_one_step(run.model, micro, run.loss_fn, run.optimizer, run.scheduler, run.scaler, run.device,
                              iteration=iteration, autocast=run.autocast, channels_last=cfg.channels_last, info=info)
        if run.ema is not None:
            run.ema.update(run.net)
        iteration += 1
        bar.update()
        meter.add(step.loss, step.images * info.world_size)
        if iteration % cfg.log_every == 0 or iteration == cfg.iterations:
            loss = mean_across_ranks(meter.mean_loss, info)  # every rank logs at the same steps
            wait, rate = meter.wait_share(), meter.rate()
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{step.lr:.2e}", img_s=f"{rate:.2f}", wait=f"{wait:.0%}")
            logbook.training(iteration, loss, step.lr, rate, wait)
        if iteration % cfg.eval_every == 0:
            result = validate(run, iteration, logbook, stopwatch, progress)
        if iteration % cfg.checkpoint_every == 0:
            save_checkpoint(run, iteration, stopwatch)
    bar.close()
    return finish(run, iteration, stop_at, result, logbook, stopwatch, progress)


def finish(run: TrainingRun, iteration: int, stop_at: int, result: dict[str, Any], logbook: Logbook,
           stopwatch: Stopwatch, progress: bool) -> dict[str, Any]:
    cfg = run.config.train
    if iteration < cfg.iterations and iteration == stop_at:
        # train.stop_after: leave the run as a kill would (last periodic checkpoint, no final eval or save).
        run.log(f"stopped after {iteration - run.start} step(s) at step {iteration} (train.stop_after); "
                "run again to resume from the newest checkpoint")
        barrier(run.info)
        logbook.close()
        return {"iteration": iteration, "stopped": True, "best_miou": run.best}
    if stopwatch.expired() and iteration < cfg.iterations:
        run.log(f"time budget of {cfg.time_budget_minutes} min spent at step {iteration}")
    if iteration % cfg.eval_every != 0 or not result:
        result = validate(run, iteration, logbook, stopwatch, progress)
    if iteration % cfg.checkpoint_every != 0:
        save_checkpoint(run, iteration, stopwatch)
    barrier(run.info)
    result = {**result, "iteration": iteration, "elapsed_minutes": stopwatch.elapsed / 60, "best_miou": run.best}
    logbook.finish(result)
    return result


def validate(run: TrainingRun, step: int, logbook: Logbook, stopwatch: Stopwatch, progress: bool) -> dict[str, Any]:
    """The val-split evaluation (``deeplab eval``'s loop, at ``train.eval_output_stride``); keeps ``best.pt``.
    With weight averaging the averaged weights are scored (and kept), and the live ones too, for the log."""
    matrix = evaluate_weights(run, run.net if run.ema is None else run.ema.module, progress)
    live = None if run.ema is None else evaluate_weights(run, run.net, progress).summary(run.card.classes)
    set_train_mode(run.model, run.config.train.freeze_bn)
    summary = matrix.summary(run.card.classes)
    logbook.evaluation(step, matrix, live_miou=None if live is None else live["miou"])
    averaged = "" if live is None else f" (averaged weights; live weights {100 * live['miou']:.2f} %)"
    run.log(f"\nstep {step}: val mIoU {100 * summary['miou']:.2f} %{averaged}, "
            f"pixel acc {100 * summary['pixel_accuracy']:.2f} %")
    if summary["miou"] > run.best:
        run.best = summary["miou"]
        save_checkpoint(run, step, stopwatch, "best.pt")
    return summary


def evaluate_weights(run: TrainingRun, model: DeepLab, progress: bool) -> ConfusionMatrix:
    """One model's confusion matrix on the validation set (the live net or the weight average), all ranks."""
    predictor = Predictor(model, normalization=run.card.normalization, device=run.device,
                          output_stride=run.config.train.eval_output_stride, class_names=run.card.classes,
                          channels_last=run.config.train.channels_last, return_probabilities=False)
    return evaluate(predictor, run.val_set, progress=progress, info=run.info).matrix


def save_checkpoint(run: TrainingRun, step: int, stopwatch: Stopwatch, tag: str | None = None) -> None:
    """``checkpoint_<step>.pt`` (the last ``keep_last`` kept) or ``tag``; rank 0 only; never non-finite weights."""
    if not run.info.is_main:
        return
    bad = [name for name, value in run.net.state_dict().items()
           if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:  # a finite loss with overflowing gradients: never let such weights become "the last good checkpoint"
        raise TrainingDiverged(f"non-finite weights after step {step} ({', '.join(bad[:3])}"
                               f"{', ...' if len(bad) > 3 else ''}; lr {run.optimizer.param_groups[0]['lr']:.3g}); "
                               "stopping without overwriting the last good checkpoint — lower train.lr")
    training = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict() if run.scaler else {}, "iteration": step, "best_miou": run.best,
                "elapsed": stopwatch.elapsed, "experiment": config_to_dict(run.config)}
    model = run.net
    if run.ema is not None:  # the file's model is the average (what eval, predict and export use)
        training["ema"] = run.ema.state()
        training["live_weights"] = {k: v.detach().cpu().contiguous() for k, v in run.net.state_dict().items()}
        model = run.ema.module
    path = run.run_dir / (tag or f"checkpoint_{step:07d}.pt")
    save_training_checkpoint(path, model=model, card=run.card, training=training)
    if tag is None:
        prune_checkpoints(run.run_dir, run.config.train.keep_last)


class RateMeter:
    """The mean training loss, images/s and the share of time spent waiting for the loader since the last
    report (a loader that starves the model shows here before anywhere else)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.images, self.wait, self.start = 0, 0.0, time.monotonic()

    def add(self, loss: float, images: int) -> None:
        self.losses.append(loss)
        self.images += images

    def waited(self, seconds: float) -> None:
        self.wait += seconds

    @property
    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    def wait_share(self) -> float:
        return self.wait / max(time.monotonic() - self.start, 1e-9)

    def rate(self) -> float:
        """Images/s since the last call (or since the meter started), then start a new window."""
        rate = self.images / max(time.monotonic() - self.start, 1e-9)
        self.losses, self.images, self.wait, self.start = [], 0, 0.0, time.monotonic()
        return rate


def out_of_time(stopwatch: Stopwatch, info: DistInfo) -> bool:
    """The time-budget decision, taken by rank 0 for all ranks: ranks whose clocks disagreed would otherwise
    leave the loop at different steps and wait on each other's collectives until the timeout."""
    if stopwatch.budget is None:
        return False
    flag = torch.tensor([int(stopwatch.expired())])
    return bool(broadcast_from_main(flag, info).item())
