"""``deeplab train`` end to end: the shipped CamVid config on real images, one-line errors for unknown keys, and
a read-only output folder refused before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import make_config, step_losses, train_cli
from deeplab.cli import main
from deeplab.config import load_config, save_config
from deeplab.training import setup, splits
from deeplab.weights.modelfile import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


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

    monkeypatch.setattr(setup, "check_dataset", no_training)
    monkeypatch.setattr(splits, "make_dataset", no_training)
    _make_read_only(locked)
    try:
        assert main(["train", "-c", str(config_file)]) == 2
    finally:
        _make_writable(locked)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err and str(config.run_dir) in err
