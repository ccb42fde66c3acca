"""Resume: bit-exact across processes (with and without loader workers), checkpoints that hold the whole training
state and still predict, keep-last and best, auto-resume past damaged checkpoints, atomic saves, and the refusal
to mix two runs in one folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import digest, make_config, state_dict_of, step_losses, train_cli
from deeplab.config import save_config
from deeplab.data.datasets import CAMVID_CLASSES
from deeplab.metrics import ConfusionMatrix
from deeplab.training import runner
from deeplab.training.metrics_csv import read_metrics_csv
from deeplab.training.state import latest_valid_checkpoint, load_training_checkpoint
from deeplab.weights.io import read_file
from deeplab.weights.modelfile import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


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

    model, card = load_model(path)
    assert card.classes == tuple(CAMVID_CLASSES) and card.ignore_index == 255 and card.dataset == "camvid"
    state = payload["state_dict"]
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 40, 56))
    assert logits.shape == (1, len(CAMVID_CLASSES), 40, 56) and torch.isfinite(logits).all()


def test_keep_last_and_best_checkpoint(straight_run: Path) -> None:
    assert sorted(p.name for p in straight_run.glob("checkpoint_*.pt")) == ["checkpoint_0000004.pt",
                                                                            "checkpoint_0000006.pt"]
    assert not list(straight_run.glob(".*.tmp"))
    evaluations = read_metrics_csv(straight_run / "metrics.csv")["val mIoU"]
    assert [step for step, _ in evaluations] == [3, 6]
    best_step, best_miou = max(evaluations, key=lambda point: point[1])
    best = load_training_checkpoint(straight_run / "best.pt").training
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
    flipped = bytearray(good)  # loads, but 64 bytes of a tensor changed: only the checksum can tell
    flipped[len(good) // 2: len(good) // 2 + 64] = bytes(b ^ 0xFF for b in flipped[len(good) // 2: len(good) // 2 + 64])
    (run_dir / "checkpoint_0000007.pt").write_bytes(bytes(flipped))
    (run_dir / ".checkpoint_0000012.pt.abcd.tmp").write_bytes(good[:1000])  # a write killed before its rename
    found = latest_valid_checkpoint(run_dir)
    assert found is not None and found[0].name == "checkpoint_0000006.pt"

    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=3",
                         "train.keep_last=2")
    result = runner.run_training(config, resume="auto", progress=False, check_data=False)
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint" in out and "checkpoint_0000010.pt" in out and "checkpoint_0000008.pt" in out
    assert "checkpoint_0000007.pt: the weights do not match the checksum" in out
    assert f"resumed from {run_dir / 'checkpoint_0000006.pt'} at step 6" in out
    assert result["iteration"] == 6
    assert [s for s, _ in step_losses(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path: Path) -> None:
    from deeplab.utils.files import atomic_torch_save

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
