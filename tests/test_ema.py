"""Weight averaging (``train.ema_decay``): the average's arithmetic with its ramped decay, a real training run whose
checkpoints hold the average (checked step by step against the live weights they record), validation that scores
the average and logs the live weights, a bit-exact resume of the average, and the refusal of a bad decay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import make_config, step_losses, train_cli
from deeplab.config import load_config, save_config
from deeplab.inference.evaluation import evaluate
from deeplab.inference.predictor import Predictor
from deeplab.training import runner
from deeplab.training.ema import WeightAverage
from deeplab.training.metrics_csv import read_metrics_csv
from deeplab.training.splits import training_splits
from deeplab.training.state import load_training_checkpoint
from deeplab.weights.modelfile import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_average_follows_the_ramped_decay_and_copies_integer_buffers() -> None:
    """Live weights set to 1, 2, 3, ... before each update: the average is the recurrence
    a_n = d_n a_{n-1} + (1 - d_n) w_n with d_n = min(decay, n / (9 + n)), batch-norm statistics included."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.4)
    assert not average.module.training and not any(p.requires_grad for p in average.module.parameters())
    expected = torch.zeros(())
    with torch.no_grad():
        for p in average.module.parameters():
            p.zero_()
        average.module[1].running_var.zero_()
    decays = []
    for n in range(1, 9):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(n))
            model[1].running_var.fill_(float(n))
            model[1].num_batches_tracked.fill_(10 * n)
        decays.append(average.current_decay())
        average.update(model)
        d = min(0.4, n / (9 + n))
        expected = d * expected + (1 - d) * n
        for name, value in average.module.state_dict().items():
            if value.is_floating_point() and name != "1.running_mean":
                torch.testing.assert_close(value, torch.full_like(value, expected.item()), rtol=1e-6, atol=1e-6,
                                           msg=f"{name} after update {n}")
        assert average.module[1].num_batches_tracked.item() == 10 * n
    assert decays[:3] == pytest.approx([1 / 10, 2 / 11, 3 / 12]) and decays[-1] == 0.4  # the ramp, then the cap
    assert average.state() == {"decay": 0.4, "updates": 8}
    assert all(p.item() == 8.0 for p in model[0].bias)  # the live model is never touched


def test_bad_decay_is_refused_before_any_work(mini_camvid: Path, tmp_path: Path) -> None:
    config = make_config(mini_camvid, tmp_path, "train.ema_decay=1.0")
    with pytest.raises(ValueError, match=r"train.ema_decay must be in \(0, 1\)"):
        runner.run_training(config, resume=None, progress=False, check_data=False)
    assert not config.run_dir.exists()


@pytest.fixture(scope="module")
def averaged_run(mini_camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 steps on 4 real CamVid frames with decay 0.5, a checkpoint after every step, validation at steps 3, 6."""
    out = tmp_path_factory.mktemp("averaged")
    config = make_config(mini_camvid, out, "data.max_train_images=4", "train.ema_decay=0.5", "train.eval_every=3",
                         "train.checkpoint_every=1", "train.keep_last=10")
    runner.run_training(config, resume=None, progress=False, check_data=False)
    return config.run_dir


def test_checkpoints_hold_the_average_of_the_live_weights_they_record(averaged_run: Path) -> None:
    files = [load_training_checkpoint(averaged_run / f"checkpoint_{step:07d}.pt") for step in range(1, 7)]
    for step, file in enumerate(files, start=1):
        assert file.training["ema"] == {"decay": 0.5, "updates": step}
    for step in range(2, 7):
        d = min(0.5, step / (9 + step))
        previous, current = files[step - 2], files[step - 1]
        live = current.training["live_weights"]
        changed = 0
        for name, value in current.state_dict.items():
            if not value.is_floating_point():
                assert torch.equal(value, live[name]), name
                continue
            torch.testing.assert_close(value, d * previous.state_dict[name] + (1 - d) * live[name],
                                       rtol=1e-5, atol=1e-6, msg=f"{name} at step {step}")
            changed += not torch.equal(value, live[name])
        assert changed > 100, "the average should differ from the live weights after SGD steps"


def test_validation_scores_the_average_and_logs_the_live_weights(averaged_run: Path) -> None:
    """The logged val mIoU is the checkpoint model's (the average), the extra series the live weights'."""
    metrics = read_metrics_csv(averaged_run / "metrics.csv")
    assert [step for step, _ in metrics["val mIoU"]] == [3, 6]
    assert [step for step, _ in metrics["val mIoU (live weights)"]] == [3, 6]
    file = load_training_checkpoint(averaged_run / "checkpoint_0000006.pt")
    averaged, _ = load_model(averaged_run / "checkpoint_0000006.pt")
    live, _ = load_model(averaged_run / "checkpoint_0000006.pt")
    live.load_state_dict(file.training["live_weights"])
    _, dataset = training_splits(load_config(averaged_run / "config.yaml"), lambda *_: None)  # what training scored
    scores = {}
    for name, model in (("averaged", averaged), ("live", live)):
        predictor = Predictor(model, normalization=file.card.normalization, class_names=file.card.classes,
                              return_probabilities=False)
        scores[name] = evaluate(predictor, dataset, progress=False).matrix.summary(file.card.classes)["miou"]
    assert metrics["val mIoU"][-1][1] == pytest.approx(scores["averaged"], abs=1e-6)
    assert metrics["val mIoU (live weights)"][-1][1] == pytest.approx(scores["live"], abs=1e-6)
    assert (averaged_run / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_resumed_average_is_bit_exact(mini_camvid: Path, averaged_run: Path, tmp_path: Path) -> None:
    """Killed after step 3 (newest checkpoint: step 3), resumed in a new process: the step-6 average and live
    weights equal the straight run's bit for bit."""
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.ema_decay=0.5", "train.eval_every=3",
                         "train.checkpoint_every=1", "train.keep_last=10", name="resumed")
    config_file = tmp_path / "resumed.yaml"
    save_config(config, config_file)
    first = train_cli(config_file, "--set", "train.stop_after=3", "--no-check", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = train_cli(config_file, "--no-check", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "live weights" in second.stdout
    assert step_losses(config.run_dir) == step_losses(averaged_run)
    straight = load_training_checkpoint(averaged_run / "checkpoint_0000006.pt")
    resumed = load_training_checkpoint(config.run_dir / "checkpoint_0000006.pt")
    assert resumed.training["ema"] == straight.training["ema"]
    for ours, theirs in ((resumed.state_dict, straight.state_dict),
                         (resumed.training["live_weights"], straight.training["live_weights"])):
        assert [k for k in theirs if not torch.equal(ours[k], theirs[k])] == []
