"""Faults during training: divergence (NaN loss, overflowing weights) stops the run without touching the last good
checkpoint; a batch of one is refused before any work unless nothing needs batch statistics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import digest, make_config, step_losses
from deeplab.cli import main
from deeplab.config import save_config
from deeplab.losses import SegmentationLoss
from deeplab.training import runner, setup
from deeplab.training.engine import TrainingDiverged
from deeplab.training.state import latest_valid_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


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

    monkeypatch.setattr(setup, "SegmentationLoss", PoisonedLoss)
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
    path, checkpoint = latest_valid_checkpoint(config.run_dir)
    assert all(torch.isfinite(v).all() for v in checkpoint.state_dict.values() if v.is_floating_point())


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
