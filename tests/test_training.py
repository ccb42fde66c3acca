"""Training (RELIABILITY.md "Training: resume and faults"): the loss, the poly schedule, freeze-BN, the samplers,
bit-exact resume across processes, atomic checkpoints and auto-resume, divergence, the batch-of-one refusal,
DDP on CPU (torchrun + gloo) against one process, and ``deeplab train`` end to end.

Runs are tiny: a width-0.5 MobileNetV2 with the mobile ASPP, 64×96 crops, batches of 2, a few steps, on a
copy of a few real CamVid images (training images at half size, validation images at 72×96 so that the
evaluations are cheap).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeplab.checkpoint import load_model
from deeplab.cli import main
from deeplab.config import Config, load_config, save_config
from deeplab.data.datasets import CAMVID_CLASSES
from deeplab.data.transforms import train_transforms
from deeplab.engine import TrainingDiverged, step_normaliser, train_one_step
from deeplab.losses import SegmentationLoss
from deeplab.metrics import ConfusionMatrix
from deeplab.plots import read_metrics_csv
from deeplab.training import runner
from deeplab.training.optim import BN_TYPES, build_optimizer, build_scheduler, poly_factor
from deeplab.training.distributed import DistInfo
from deeplab.training.sampler import AugmentedDataset, ShardSampler, TrainSampler, sample_seed, step_seed
from deeplab.training.state import latest_valid_checkpoint, load_training_checkpoint
from deeplab.weights.io import read_file

MODEL = ["model.backbone=mobilenet_v2", "model.width_mult=0.5", "model.aspp_rates=[]"]


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the subprocesses (OMP_NUM_THREADS=1): on a busy 2-core machine two
    OpenMP threads made these tiny steps ~5× slower (spinning barriers). Every run of a comparison uses the
    same thread count, so bit-exact comparisons between this process and subprocesses hold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _copy_camvid(src: Path, dst: Path, split: str, count: int, size: tuple[int, int]) -> None:
    """``count`` real CamVid pairs resized to ``size`` (W, H): image bilinear, mask nearest (void kept)."""
    (dst / split).mkdir(parents=True)
    (dst / f"{split}annot").mkdir()
    for path in sorted((src / split).glob("*.png"))[:count]:
        Image.open(path).convert("RGB").resize(size, Image.Resampling.BILINEAR).save(dst / split / path.name)
        mask = np.asarray(Image.open(src / f"{split}annot" / path.name).resize(size, Image.Resampling.NEAREST))
        Image.fromarray(mask, mode="L").save(dst / f"{split}annot" / path.name)


@pytest.fixture(scope="session")
def mini_camvid(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training images at 240×180 (random scale 0.5..2 never needs padding for a 64×96 crop) and 3
    validation images at 96×72, with CamVid's void pixels (→ ignore)."""
    root = tmp_path_factory.mktemp("camvid_mini")
    _copy_camvid(shared_data / "camvid", root, "train", 8, (240, 180))
    _copy_camvid(shared_data / "camvid", root, "val", 3, (96, 72))
    return root


def make_config(root: Path, output_dir: Path, *overrides: str, name: str = "run") -> Config:
    return load_config(None, [*MODEL, "data.dataset=camvid", f"data.root={root}", "data.crop_size=[64, 96]",
                              "data.workers=0", "train.batch_size=2", "train.iterations=6", "train.log_every=1",
                              "train.eval_every=1000", "train.checkpoint_every=2", f"output_dir={output_dir}",
                              f"name={name}", *overrides])


def train_cli(config_file: Path, *args: str, cwd: Path, torchrun: int = 0,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """``deeplab train`` in a new process (or ``torchrun --nproc-per-node N -m deeplab train``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "deeplab"]
    if torchrun:
        # pytorch#135712: without this, torchrun's rendezvous store sharing failed or hung on torch 2.13 CPU.
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}",
                    "-m", "deeplab"]
    return subprocess.run([*launcher, "train", "-c", str(config_file), "--no-progress", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def step_losses(run_dir: Path) -> list[tuple[float, float]]:
    return read_metrics_csv(run_dir / "metrics.csv")["train loss"]


def state_dict_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_training_checkpoint(checkpoint)["state_dict"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def straight_run(mini_camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A: 6 steps straight (4 images, batch 2 → 2 steps an epoch → 3 epochs), checkpoints every 2 steps,
    the last 2 kept, evaluations at steps 3 and 6, every step's loss logged."""
    out = tmp_path_factory.mktemp("straight")
    config = make_config(mini_camvid, out, "data.max_train_images=4", "train.eval_every=3", "train.keep_last=2")
    runner.run_training(config, resume=None, progress=False, check_data=False)
    return config.run_dir


# --------------------------------------------------------------------------------------------------- loss


def test_all_ignore_crop_gives_zero_loss_and_zero_gradients() -> None:
    """F.cross_entropy gives NaN on a crop with no labelled pixel (seen); ours gives 0 and no gradient."""
    torch.manual_seed(0)
    target = torch.full((2, 5, 6), 255, dtype=torch.int64)
    assert F.cross_entropy(torch.randn(2, 4, 5, 6), target, ignore_index=255).isnan()  # why the guard exists
    for weights in (None, [0.5, 2.0, 1.0, 3.0]):
        logits = torch.randn(2, 4, 5, 6, requires_grad=True)
        loss = SegmentationLoss(class_weights=weights)(logits, target)
        assert torch.isfinite(loss) and loss.item() == 0.0
        loss.backward()
        assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_loss_matches_cross_entropy_weighted_mean_and_adds_aux() -> None:
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255  # mixed: some ignore pixels
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0])
    plain = F.cross_entropy(logits, target, ignore_index=255)
    weighted = F.cross_entropy(logits, target, weight=weights, ignore_index=255)
    assert not torch.allclose(plain, weighted)  # the weights matter on this target
    torch.testing.assert_close(SegmentationLoss()(logits, target), plain, rtol=1e-6, atol=0)
    loss_fn = SegmentationLoss(class_weights=weights, aux_weight=0.25)
    torch.testing.assert_close(loss_fn(logits, target), weighted, rtol=1e-6, atol=0)
    aux_loss = F.cross_entropy(aux, target, weight=weights, ignore_index=255)
    torch.testing.assert_close(loss_fn((logits, aux), target), weighted + 0.25 * aux_loss, rtol=1e-6, atol=0)


def test_shared_denominator_makes_split_batches_sum_to_the_whole_batch_mean() -> None:
    """Two crops with very different numbers of ignore pixels: each crop's loss over the step's normaliser
    sums to the whole batch's weighted mean (per-crop means averaged would give the mostly-ignore crop as much
    say as the full one — they differ here by a checked margin)."""
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 6, 8), torch.randint(0, 4, (2, 6, 8))
    target[1, 1:] = 255  # crop 1: one labelled row out of six
    for weights in (None, [0.5, 2.0, 1.0, 3.0]):
        loss_fn = SegmentationLoss(class_weights=weights)
        whole = loss_fn(logits, target)
        denominator = step_normaliser(loss_fn, [target[:1], target[1:]], DistInfo())
        torch.testing.assert_close(denominator, loss_fn.normaliser(target))
        parts = loss_fn(logits[:1], target[:1], denominator) + loss_fn(logits[1:], target[1:], denominator)
        torch.testing.assert_close(parts, whole, rtol=1e-6, atol=0)
        per_crop_means = (loss_fn(logits[:1], target[:1]) + loss_fn(logits[1:], target[1:])) / 2
        assert abs(per_crop_means - whole) > 1e-2


def test_step_seed_gives_each_rank_and_step_its_own_dropout_masks() -> None:
    def mask(iteration: int, rank: int) -> torch.Tensor:
        torch.manual_seed(step_seed(0, iteration, rank))
        return F.dropout(torch.ones(1000), p=0.5) > 0

    assert torch.equal(mask(3, 1), mask(3, 1))  # a resumed run redraws the same masks without saved state
    assert not torch.equal(mask(3, 0), mask(3, 1)) and not torch.equal(mask(3, 0), mask(4, 0))
    assert step_seed(0, 3, 0) != sample_seed(0, 3, 0)


# ----------------------------------------------------------------------------------------------- schedule


def _lrs(iterations: int, warmup: int, steps: int, base: float = 0.01) -> list[float]:
    """The lr used at iterations 0..steps-1 with the scheduler stepped once per iteration."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = build_scheduler(optimizer, max_iterations=iterations, power=0.9, warmup=warmup)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_poly_schedule_per_iteration() -> None:
    base, iterations = 0.01, 100
    lrs = _lrs(iterations, 0, iterations)
    for it in (0, iterations // 2, iterations - 1):
        assert lrs[it] == pytest.approx(base * (1 - it / iterations) ** 0.9, rel=1e-12)
    assert lrs[0] == base and lrs[-1] > 0
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_warmup_is_linear_then_poly() -> None:
    base, warmup = 0.01, 10
    lrs = _lrs(100, warmup, 12, base)
    assert lrs[:warmup] == pytest.approx([base * (it + 1) / warmup for it in range(warmup)], rel=1e-12)
    assert lrs[warmup] == pytest.approx(base * (1 - warmup / 100) ** 0.9, rel=1e-12)
    assert poly_factor(5, 100, warmup=0) == pytest.approx((1 - 5 / 100) ** 0.9)


def test_runner_steps_the_schedule_once_per_iteration(straight_run: Path) -> None:
    """The lr logged at step s (1-based) is the one used for it: base·(1 − (s−1)/max)^0.9."""
    lrs = read_metrics_csv(straight_run / "metrics.csv")["lr"]
    assert [step for step, _ in lrs] == [1, 2, 3, 4, 5, 6]
    for step, lr in lrs:
        assert lr == pytest.approx(0.007 * (1 - (step - 1) / 6) ** 0.9, rel=1e-9)


# ---------------------------------------------------------------------------------------------- freeze-BN


def _tiny_model(mini_camvid: Path, tmp_path: Path, *overrides: str) -> nn.Module:
    config = make_config(mini_camvid, tmp_path, *overrides)
    return runner.build_training_model(config, num_classes=4, log=lambda *_: None)


def _one_step(model: nn.Module) -> None:
    torch.manual_seed(1)
    batch = (torch.randn(2, 3, 64, 96), torch.randint(0, 4, (2, 64, 96)))
    optimizer = build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, max_iterations=10, power=0.9, warmup=0)
    train_one_step(model, [batch], SegmentationLoss(), optimizer, scheduler, None, torch.device("cpu"), amp=False,
                   iteration=0)


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.clone() for name, module in model.named_modules() if isinstance(module, BN_TYPES)
            for key, value in {**dict(module.named_parameters(recurse=False)),
                               **dict(module.named_buffers(recurse=False))}.items()}


def _conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: module.weight.detach().clone() for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d)}


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_batch_norm_keeps_statistics_and_affine(mini_camvid: Path, tmp_path: Path, freeze: bool) -> None:
    model = _tiny_model(mini_camvid, tmp_path)
    runner.set_train_mode(model, freeze)
    if freeze:
        assert all(not m.training and not any(p.requires_grad for p in m.parameters())
                   for m in model.modules() if isinstance(m, BN_TYPES))
        assert model.training
    before_bn, before_conv = _bn_state(model), _conv_weights(model)
    _one_step(model)
    after_bn, after_conv = _bn_state(model), _conv_weights(model)
    changed_bn = [k for k in before_bn if not torch.equal(before_bn[k], after_bn[k])]
    if freeze:
        assert changed_bn == []
    else:  # the same step without freezing moves statistics and affine parameters (the test can fail)
        assert any(k.endswith("running_mean") for k in changed_bn) and any(k.endswith("weight") for k in changed_bn)
    assert sum(not torch.equal(before_conv[k], after_conv[k]) for k in before_conv) > len(before_conv) // 2
    # After an evaluation the runner re-applies freeze-BN (model.train() alone would unfreeze the statistics).
    model.eval()
    runner.set_train_mode(model, freeze)
    assert all(m.training != freeze for m in model.modules() if isinstance(m, BN_TYPES))


def test_bn_momentum_is_the_papers_decay(mini_camvid: Path, tmp_path: Path) -> None:
    """Default train.bn_momentum 0.0003 = 1 − decay 0.9997, set on every BN layer by the runner's builder."""
    assert make_config(mini_camvid, tmp_path).train.bn_momentum == 0.0003
    model = _tiny_model(mini_camvid, tmp_path)
    momenta = {m.momentum for m in model.modules() if isinstance(m, BN_TYPES)}
    assert momenta == {0.0003}
    model = _tiny_model(mini_camvid, tmp_path, "train.bn_momentum=0.01")
    assert {m.momentum for m in model.modules() if isinstance(m, BN_TYPES)} == {0.01}


# ------------------------------------------------------------------------------------------------ samplers


def _stream(sampler: TrainSampler, count: int) -> list[tuple[int, int]]:
    return list(itertools.islice(iter(sampler), count))


@pytest.mark.parametrize("size,batch,world", [(11, 2, 2), (10, 3, 1), (9, 1, 3)])
def test_train_sampler_shards_are_disjoint_full_batches(size: int, batch: int, world: int) -> None:
    per_rank = (size // (batch * world)) * batch
    for epoch in range(3):
        shards = [[index for e, index in _stream(TrainSampler(size, batch, seed=5, rank=r, world_size=world),
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


def test_shard_sampler_covers_odd_length_once() -> None:
    shards = [list(ShardSampler(7, rank, 2)) for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(7))
    assert [len(ShardSampler(7, rank, 2)) for rank in range(2)] == [4, 3]
    assert list(ShardSampler(7)) == list(range(7))


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
    reference = first[(0, 3)]
    for key in [(1, 2), (0, 1), (2, 3)]:  # other samples in between
        first[key]
    again, fresh = first[(0, 3)], dataset()[(0, 3)]
    for other in (again, fresh):
        assert all(torch.equal(a, b) for a, b in zip(reference, other))
    next_epoch = first[(1, 3)]
    assert not torch.equal(reference[0], next_epoch[0])
    assert torch.equal(torch.get_rng_state(), global_rng)  # the global RNG (dropout's) is untouched


# ------------------------------------------------------------------------------------- bit-exact resume


@pytest.mark.slow
def test_resume_in_new_process_is_bit_exact(mini_camvid: Path, straight_run: Path, tmp_path: Path) -> None:
    """Run B: the same 6-step schedule, killed (train.stop_after) after step 3 of a new process — the newest
    checkpoint is step 2, so step 3 is redone — then resumed in another process; once with the data loaded
    in the main process and once by a worker. Parameters and every step's loss equal run A's bit for bit."""
    reference = state_dict_of(straight_run / "checkpoint_0000006.pt")
    reference_losses = step_losses(straight_run)
    assert len(reference_losses) == 6
    for workers in (0, 1):
        config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=3",
                             "train.keep_last=2", f"data.workers={workers}", name=f"workers{workers}")
        config_file = tmp_path / f"workers{workers}.yaml"
        save_config(config, config_file)
        first = train_cli(config_file, "--set", "train.stop_after=3", "--no-check", cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        run_dir = config.run_dir
        assert "stopped after 3 step(s)" in first.stdout
        assert sorted(p.name for p in run_dir.glob("checkpoint_*.pt")) == ["checkpoint_0000002.pt"]
        assert not (run_dir / "result.json").exists()  # as if killed: no final evaluation or save
        assert [s for s, _ in step_losses(run_dir)] == [1, 2, 3]

        second = train_cli(config_file, "--no-check", cwd=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert f"resumed from {run_dir / 'checkpoint_0000002.pt'} at step 2" in second.stdout
        assert step_losses(run_dir) == reference_losses, workers  # step 3 logged once, from the resumed run
        resumed = state_dict_of(run_dir / "checkpoint_0000006.pt")
        assert resumed.keys() == reference.keys()
        different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
        assert different == [], (workers, different[:5])


def test_checkpoint_holds_training_state_and_loads_for_inference(straight_run: Path) -> None:
    path = straight_run / "checkpoint_0000006.pt"
    payload = read_file(path)  # torch.load(weights_only=True)
    training = payload["training"]
    assert training["iteration"] == 6
    assert training["scheduler"]["last_epoch"] == 6
    optimizer_state = training["optimizer"]["state"]
    assert optimizer_state and all("momentum_buffer" in s for s in optimizer_state.values())
    assert set(training["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert isinstance(training["rng"]["torch"], torch.Tensor) and training["rng"]["torch"].dtype == torch.uint8
    assert training["best_miou"] == pytest.approx(json.loads((straight_run / "result.json").read_text())["best_miou"])
    assert training["experiment"]["train"]["iterations"] == 6 and "scaler" in training

    model, metadata = load_model(path)
    assert metadata["classes"] == list(CAMVID_CLASSES) and metadata["ignore_index"] == 255
    state = payload["state_dict"]
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 40, 56))
    assert logits.shape == (1, len(CAMVID_CLASSES), 40, 56) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------- checkpoints and auto-resume


def test_keep_last_and_best_checkpoint(straight_run: Path) -> None:
    assert sorted(p.name for p in straight_run.glob("checkpoint_*.pt")) == ["checkpoint_0000004.pt",
                                                                            "checkpoint_0000006.pt"]
    assert not list(straight_run.glob(".*.tmp"))
    evaluations = read_metrics_csv(straight_run / "metrics.csv")["val mIoU"]
    assert [step for step, _ in evaluations] == [3, 6]
    best_step, best_miou = max(evaluations, key=lambda point: point[1])
    best = load_training_checkpoint(straight_run / "best.pt")["training"]
    assert best["best_miou"] == pytest.approx(best_miou, rel=1e-12)
    assert best["iteration"] == best_step
    result = json.loads((straight_run / "result.json").read_text())
    assert result["best_miou"] == pytest.approx(best_miou, rel=1e-12)
    last = json.loads((straight_run / "eval.json").read_text())
    assert last["step"] == 6 and last["miou"] == pytest.approx(evaluations[-1][1], rel=1e-12)
    matrix = ConfusionMatrix(len(CAMVID_CLASSES))
    matrix.matrix = torch.tensor(last["confusion_matrix"])
    assert matrix.miou == pytest.approx(last["miou"], rel=1e-12)


def test_auto_resume_skips_a_damaged_newest_checkpoint(mini_camvid: Path, straight_run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    good = (run_dir / "checkpoint_0000006.pt").read_bytes()
    (run_dir / "checkpoint_0000010.pt").write_bytes(good[: len(good) // 2])  # truncated (e.g. a disk failure)
    (run_dir / "checkpoint_0000008.pt").write_bytes(b"\x00garbage" * 100)
    (run_dir / ".checkpoint_0000012.pt.abcd.tmp").write_bytes(good[:1000])  # a write killed before its rename
    found = latest_valid_checkpoint(run_dir)
    assert found is not None and found[0].name == "checkpoint_0000006.pt"

    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=3",
                         "train.keep_last=2")
    result = runner.run_training(config, resume="auto", progress=False, check_data=False)
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint" in out and "checkpoint_0000010.pt" in out and "checkpoint_0000008.pt" in out
    assert f"resumed from {run_dir / 'checkpoint_0000006.pt'} at step 6" in out
    assert result["iteration"] == 6
    assert [s for s, _ in step_losses(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path: Path) -> None:
    from deeplab.fileio import atomic_torch_save

    path = atomic_torch_save({"weights": torch.ones(3)}, tmp_path / "checkpoint_0000002.pt")
    before = digest(path)
    with pytest.raises(Exception):  # a lambda cannot be pickled: torch.save fails after writing part of the file
        atomic_torch_save({"weights": torch.zeros(1000), "bad": lambda: 0}, path)
    assert digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_0000002.pt"]


def test_fresh_start_refuses_a_folder_with_checkpoints(mini_camvid: Path, straight_run: Path,
                                                       tmp_path: Path) -> None:
    """Mixing runs would let pruning delete the new run's checkpoints (the old ones have higher steps)."""
    shutil.copytree(straight_run, tmp_path / "run")
    config = make_config(mini_camvid, tmp_path)
    with pytest.raises(FileExistsError, match="checkpoint_0000006.pt"):
        runner.run_training(config, resume=None, progress=False, check_data=False)


# --------------------------------------------------------------------------------------------- divergence


def test_divergence_stops_with_step_loss_lr_and_keeps_the_checkpoint(mini_camvid: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=1")
    run_dir = config.run_dir
    seen: dict[str, str] = {}

    class PoisonedLoss(SegmentationLoss):
        calls = 0

        def forward(self, output, target, denominator=None):
            PoisonedLoss.calls += 1
            loss = super().forward(output, target, denominator)
            if PoisonedLoss.calls < 3:
                return loss
            seen.update({p.name: digest(p) for p in run_dir.iterdir() if p.is_file()})  # the files before step 3
            return loss * float("nan")

    monkeypatch.setattr(runner, "SegmentationLoss", PoisonedLoss)
    with pytest.raises(TrainingDiverged) as caught:
        runner.run_training(config, resume=None, progress=False, check_data=False)
    message = str(caught.value)
    lr = 0.007 * (1 - 2 / 6) ** 0.9
    assert "nan" in message and "step 3" in message and f"lr {lr:.3g}" in message
    assert {"checkpoint_0000002.pt", "best.pt"} <= set(seen)
    after = {p.name: digest(p) for p in run_dir.iterdir() if p.is_file()}
    assert after == seen  # nothing written or overwritten after the bad step
    assert latest_valid_checkpoint(run_dir)[0].name == "checkpoint_0000002.pt"


def test_real_divergence_on_the_command_line(mini_camvid: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """lr 1e6: within a few steps the weights overflow (seen: BN running_var inf after step 3 while the loss was
    still finite, NaN at step 4). One line on stderr, exit 1, and — checkpointing every step — the newest
    checkpoint left is still finite."""
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.lr=1.0e+6",
                         "train.checkpoint_every=1", "train.keep_last=10")
    config_file = tmp_path / "c.yaml"
    save_config(config, config_file)
    assert main(["train", "-c", str(config_file), "--no-progress", "--no-check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deeplab train: diverged: ") and "Traceback" not in err
    assert re.search(r"at step \d+ \(lr [0-9.e+]+\)", err) or re.search(r"after step \d+ .*lr [0-9.e+]+\)", err)
    assert not (config.run_dir / "result.json").exists()
    path, payload = latest_valid_checkpoint(config.run_dir)
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_checkpointed(mini_camvid: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A finite loss can still leave overflowed weights (e.g. inf gradients): the save refuses them."""
    real_step = runner.train_one_step

    def step_then_poison(model, *args, iteration: int, **kwargs):
        result = real_step(model, *args, iteration=iteration, **kwargs)
        if iteration == 1:
            with torch.no_grad():
                next(model.parameters())[0] = float("inf")
        return result

    monkeypatch.setattr(runner, "train_one_step", step_then_poison)
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4")
    with pytest.raises(TrainingDiverged, match=r"non-finite weights after step 2 \(backbone"):
        runner.run_training(config, resume=None, progress=False, check_data=False)
    assert not list(config.run_dir.glob("*.pt"))


# ---------------------------------------------------------------------------------------------- batch of 1


def test_batch_of_one_is_refused_before_any_work(mini_camvid: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(mini_camvid, tmp_path / "out", "train.batch_size=1")
    with pytest.raises(ValueError, match=r"train\.batch_size=1.*image-pooling.*freeze_bn"):
        runner.run_training(config, resume=None, progress=False, check_data=True)
    assert not config.run_dir.exists()  # refused before the output folder, the data scan or the model
    config_file = tmp_path / "b1.yaml"
    save_config(config, config_file)
    assert main(["train", "-c", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeplab train: error: train.batch_size=1") and err.count("\n") == 1


@pytest.mark.parametrize("override", ["train.freeze_bn=true", "model.image_pooling=false"])
def test_batch_of_one_trains_without_pooled_batch_norm(mini_camvid: Path, tmp_path: Path, override: str) -> None:
    config = make_config(mini_camvid, tmp_path, "train.batch_size=1", "train.iterations=1",
                         "data.max_train_images=1", "data.max_val_images=1", override)
    result = runner.run_training(config, resume=None, progress=False, check_data=False)
    assert result["iteration"] == 1 and np.isfinite(step_losses(config.run_dir)[0][1])


def test_evaluation_at_another_output_stride(mini_camvid: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """train.eval_output_stride (train at OS16, evaluate at OS8); training and checkpoints stay at OS16."""
    seen = []
    real_evaluate = runner.evaluate

    def spy(model, *args, **kwargs):
        seen.append(model.output_stride)
        return real_evaluate(model, *args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", spy)
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=2", "train.iterations=2",
                         "train.eval_every=1", "train.eval_output_stride=8")
    runner.run_training(config, resume=None, progress=False, check_data=False)
    assert seen == [8, 8]
    model, _ = load_model(config.run_dir / "checkpoint_0000002.pt")
    assert model.output_stride == 16 and model.config["output_stride"] == 16


def test_second_stage_starts_from_the_first_at_os8_with_frozen_bn(mini_camvid: Path, shared_data: Path,
                                                                  tmp_path: Path) -> None:
    """The paper's two stages (configs/voc_resnet101_os8_finetune.yaml in miniature): stage 2 loads stage 1
    through model.init_weights, runs at OS8 with BN frozen — its BN statistics and affine parameters stay
    bit-identical to stage 1's while the convolutions train. Then the same start with finetune=true on
    another dataset (real VOC images, 21 classes instead of CamVid's 11) re-initialises only the classifier."""
    stage1 = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.iterations=2", name="stage1")
    runner.run_training(stage1, resume=None, progress=False, check_data=False)
    start = stage1.run_dir / "checkpoint_0000002.pt"
    second = ["data.max_train_images=4", "train.iterations=2", "train.freeze_bn=true", "train.lr=0.001",
              f"model.init_weights={start}"]
    stage2 = make_config(mini_camvid, tmp_path, *second, "model.output_stride=8", name="stage2")
    runner.run_training(stage2, resume=None, progress=False, check_data=False)

    model, _ = load_model(stage2.run_dir / "checkpoint_0000002.pt")
    assert model.output_stride == 8 and model.backbone.output_stride == 8
    before, after = state_dict_of(start), state_dict_of(stage2.run_dir / "checkpoint_0000002.pt")
    stage1_bn, frozen = _bn_state(load_model(start)[0]), _bn_state(model)
    assert len(frozen) > 50 and frozen.keys() == stage1_bn.keys()
    assert all(torch.equal(v, stage1_bn[k]) for k, v in frozen.items())
    assert not torch.equal(after["backbone.features.0.0.weight"], before["backbone.features.0.0.weight"])

    voc = [f"data.root={shared_data / 'voc2012_val_dev'}", "data.train_split=val_dev.txt", "data.max_val_images=1",
           "data.val_split=val_dev.txt", "model.finetune=true"]
    transfer = make_config(mini_camvid, tmp_path, *second, *voc, "data.dataset=voc", name="transfer")
    runner.run_training(transfer, resume=None, progress=False, check_data=False)
    moved = state_dict_of(transfer.run_dir / "checkpoint_0000002.pt")
    classifier = [k for k in moved if moved[k].shape != before[k].shape]
    assert classifier and all(moved[k].shape[0] == 21 and before[k].shape[0] == 11 for k in classifier)
    transferred_bn = _bn_state(load_model(transfer.run_dir / "checkpoint_0000002.pt")[0])
    assert all(torch.equal(v, stage1_bn[k]) for k, v in transferred_bn.items())  # loaded, then frozen


# ------------------------------------------------------------------------------------------------ DDP (CPU)


SAME_GRADIENT_RUN = ["train.freeze_bn=true", "model.aspp_dropout=0.0", "data.max_train_images=4",
                     "train.class_weights=[0.3, 0.2, 4.8, 0.15, 1.0, 0.4, 3.8, 2.0, 0.8, 6.4, 8.9]"]


def test_gradient_accumulation_matches_one_batch(mini_camvid: Path, tmp_path: Path) -> None:
    """Batch 1 × 2 accumulated micro-batches vs batch 2: the same samples per step (void pixels and class
    weights make the two crops count different totals), BN frozen, no dropout → the same weights and losses."""
    whole = make_config(mini_camvid, tmp_path, *SAME_GRADIENT_RUN, "train.iterations=4", name="whole")
    split = make_config(mini_camvid, tmp_path, *SAME_GRADIENT_RUN, "train.iterations=4", "train.batch_size=1",
                        "train.grad_accumulation=2", name="split")
    for config in (whole, split):
        runner.run_training(config, resume=None, progress=False, check_data=False)
    whole_state = state_dict_of(whole.run_dir / "checkpoint_0000004.pt")
    split_state = state_dict_of(split.run_dir / "checkpoint_0000004.pt")
    for key in whole_state:
        torch.testing.assert_close(split_state[key], whole_state[key], atol=1e-5, rtol=0, msg=key)
    np.testing.assert_allclose([v for _, v in step_losses(split.run_dir)],
                               [v for _, v in step_losses(whole.run_dir)], rtol=1e-5)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(mini_camvid: Path, tmp_path: Path) -> None:
    """torchrun, 2 ranks × 1 image vs 1 process × 2 images, same seed: the same samples in every step, BN frozen
    and no dropout (both would depend on the per-process batch), so the gradients agree up to float rounding —
    with CamVid's void pixels and class weights, so the two crops of a step count different weighted pixel
    totals (the loss normaliser is summed across ranks). Evaluation on 3 validation images (odd: rank 0 gets 2,
    rank 1 gets 1) gives the one-process matrix."""
    common = [*SAME_GRADIENT_RUN, "train.iterations=4", "train.eval_every=4", "train.checkpoint_every=2",
              "train.time_budget_minutes=60"]  # the budget: a collective every step
    single = make_config(mini_camvid, tmp_path, *common, name="single")
    runner.run_training(single, resume=None, progress=False, check_data=False)

    ddp = make_config(mini_camvid, tmp_path, *common, "train.batch_size=1", name="ddp")
    config_file = tmp_path / "ddp.yaml"
    save_config(ddp, config_file)
    result = train_cli(config_file, "--no-check", cwd=tmp_path, torchrun=2)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])

    # Only rank 0 writes and reports.
    names = {p.name for p in ddp.run_dir.iterdir()} - {"tensorboard"}
    assert names == {"config.yaml", "metrics.csv", "curves.png", "confusion_matrix.png", "eval.json", "result.json",
                     "best.pt", "checkpoint_0000002.pt", "checkpoint_0000004.pt"}
    assert result.stdout.count('"iteration": 4') == 1 and result.stdout.count("step 4: val mIoU") == 1

    single_state = state_dict_of(single.run_dir / "checkpoint_0000004.pt")
    ddp_state = state_dict_of(ddp.run_dir / "checkpoint_0000004.pt")
    assert single_state.keys() == ddp_state.keys()
    for key in single_state:
        torch.testing.assert_close(ddp_state[key], single_state[key], atol=1e-5, rtol=0, msg=key)
    moved = state_dict_of(single.run_dir / "checkpoint_0000002.pt")
    assert any(not torch.equal(moved[k], single_state[k]) for k in moved)  # training did change the weights
    single_losses, ddp_losses = step_losses(single.run_dir), step_losses(ddp.run_dir)
    assert [s for s, _ in ddp_losses] == [1, 2, 3, 4]  # the loss averaged over ranks, as one process logs it
    np.testing.assert_allclose([v for _, v in ddp_losses], [v for _, v in single_losses], rtol=1e-5)

    single_eval = json.loads((single.run_dir / "eval.json").read_text())
    ddp_eval = json.loads((ddp.run_dir / "eval.json").read_text())
    assert 0 < ddp_eval["pixels"] == single_eval["pixels"] < 3 * 72 * 96  # void pixels are not counted
    assert ddp_eval["confusion_matrix"] == single_eval["confusion_matrix"]
    # Exactly: the DDP model evaluated in one process gives the matrix the two ranks summed.
    from deeplab.data.transforms import eval_transforms
    from deeplab.engine import evaluate

    model, _ = load_model(ddp.run_dir / "checkpoint_0000004.pt")
    val_set = runner.make_dataset(ddp, "val", None)
    val_set.transform = eval_transforms(ddp.data.mean, ddp.data.std)
    loader = torch.utils.data.DataLoader(val_set, batch_size=1)
    matrix = evaluate(model, loader, len(CAMVID_CLASSES), 255, torch.device("cpu"))
    assert matrix.matrix.tolist() == ddp_eval["confusion_matrix"]


# ------------------------------------------------------------------------------------------ command line


@pytest.mark.slow
def test_train_command_end_to_end_on_camvid(shared_data: Path, tmp_path: Path) -> None:
    """The shipped config on real, full-size CamVid images (2 steps, data scan on) writes every artefact."""
    from conftest import REPO

    result = train_cli(REPO / "configs" / "camvid_mobilenetv2.yaml", "--set", "model.width_mult=0.5",
                       "--set", "model.backbone_weights=null", "--set", f"data.root={shared_data / 'camvid'}",
                       "--set", "data.crop_size=[64, 96]", "--set", "data.workers=0",
                       "--set", "data.max_train_images=4", "--set", "data.max_val_images=1",
                       "--set", "train.batch_size=2", "--set", "train.iterations=2", "--set", "train.log_every=1",
                       "--set", f"output_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "camvid_mobilenetv2"
    for name in ("metrics.csv", "curves.png", "confusion_matrix.png", "config.yaml", "eval.json", "result.json",
                 "checkpoint_0000002.pt", "best.pt"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert json.loads(result.stdout[result.stdout.rindex("{\n"):])["iteration"] == 2
    assert [s for s, _ in step_losses(run_dir)] == [1, 2]
    saved = load_config(run_dir / "config.yaml")
    assert saved.train.iterations == 2 and saved.model.width_mult == 0.5
    assert json.loads((run_dir / "eval.json").read_text())["pixels"] > 0
    load_model(run_dir / "checkpoint_0000002.pt")


def test_unknown_override_exits_2_listing_valid_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text("name: x\n")
    assert main(["train", "-c", str(config_file), "--set", "train.stop_afterr=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stop_afterr" in err and "valid keys" in err and "stop_after," in err
    assert not (tmp_path / "runs").exists()


def _make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o555)
        return
    # root ignores permission bits; the immutable attribute stops it (ext4 and most local filesystems)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("cannot make a read-only folder for root here (no chattr +i)")


def _make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)])
    path.chmod(0o755)


@pytest.mark.parametrize("existing_run_dir", [False, True])
def test_read_only_output_folder_fails_before_training(mini_camvid: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       existing_run_dir: bool) -> None:
    out = tmp_path / "out"
    config = make_config(mini_camvid, out)
    locked = config.run_dir if existing_run_dir else out
    locked.mkdir(parents=True)
    config_file = tmp_path / "c.yaml"
    save_config(config, config_file)

    def no_training(*args, **kwargs):
        raise AssertionError("reached the data scan / training")

    monkeypatch.setattr(runner, "check_dataset", no_training)
    monkeypatch.setattr(runner, "make_dataset", no_training)
    _make_read_only(locked)
    try:
        assert main(["train", "-c", str(config_file)]) == 2
    finally:
        _make_writable(locked)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err and str(config.run_dir) in err
