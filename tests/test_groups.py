"""Group-held-out validation: CamVid's drives split exactly, bad patterns and unknown groups refused in one line,
and a training run that validates on a held-out drive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import copy_camvid, make_config, single_thread
from deeplab.data.datasets import build_dataset, camvid_dataset
from deeplab.data.groups import select_groups, split_by_group
from deeplab.training import runner


def test_camvid_drives_are_held_out_whole(shared_data: Path) -> None:
    train = camvid_dataset(shared_data / "camvid", "train")
    rest, held = split_by_group(train, ["0006R0"])
    assert (len(rest), len(held)) == (62 + 204, 101)
    assert all(p.name.startswith("0006R0_") for p, _ in held.pairs)
    assert not any(p.name.startswith("0006R0_") for p, _ in rest.pairs)
    assert sorted(p for p, _ in rest.pairs + held.pairs) == sorted(p for p, _ in train.pairs)
    assert len(select_groups(train, ["0001TP", "0016E5"])) == 266
    with pytest.raises(ValueError, match=r"no group 0009XX; its groups \(images\): 0001TP \(62\), 0006R0 \(101\), "
                                         r"0016E5 \(204\)"):
        split_by_group(train, ["0009XX"])
    with pytest.raises(ValueError, match="leaves no group to train on"):
        split_by_group(train, ["0001TP", "0006R0", "0016E5"])
    with pytest.raises(ValueError, match="needs a capture group"):
        split_by_group(train, ["0006R0"], pattern="^0006")
    with pytest.raises(ValueError, match="does not match the group pattern"):
        split_by_group(train, ["0006R0"], pattern="^(0006R0)_")


def test_a_union_of_splits_holds_the_drive_out_of_every_part(shared_data: Path) -> None:
    """``train+val``: CamVid's val clip (drive 0016E5) joins training, and holding out 0006R0 still leaves no
    frame of that drive in training."""
    union = build_dataset("camvid", root=shared_data / "camvid", split="train+val")
    train, val = (camvid_dataset(shared_data / "camvid", s) for s in ("train", "val"))
    assert union.pairs == train.pairs + val.pairs and len(union) == 367 + 101
    rest, held = split_by_group(union, ["0006R0"])
    assert (len(rest), len(held)) == (62 + 204 + 101, 101)
    assert held.pairs == [pair for pair in train.pairs if pair[0].name.startswith("0006R0_")]
    assert union.read(367).image_path == val.pairs[0][0] and union.read(367).label is not None
    with pytest.raises(ValueError, match="join distinct split names"):
        build_dataset("camvid", root=shared_data / "camvid", split="train+train")
    with pytest.raises(ValueError, match="join distinct split names"):
        build_dataset("camvid", root=shared_data / "camvid", split="train+")
    with pytest.raises(ValueError, match="nope: images folder does not exist"):
        build_dataset("camvid", root=shared_data / "camvid", split="train+nope")


def test_training_validates_on_the_held_out_drive(shared_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Four frames of each of two drives; holding out 0006R0 trains on the 0001TP frames and evaluates on the
    0006R0 ones (every one of their labelled pixels counted)."""
    root = tmp_path / "camvid"
    source = shared_data / "camvid"
    for drive, start in (("0001TP", 0), ("0006R0", 62)):
        copy_camvid(source, root, "train", 4, (240, 180), start=start)
    copy_camvid(source, root, "val", 1, (96, 72))
    config = make_config(root, tmp_path / "runs", "train.iterations=2", "data.holdout_groups=[0006R0]",
                         "train.eval_every=2")
    with single_thread():
        runner.run_training(config, resume=None, progress=False, check_data=False)
    out = capsys.readouterr().out
    assert "validating on held-out group(s) 0006R0 4 of train; training on 0001TP 4" in out
    evaluation = json.loads((config.run_dir / "eval.json").read_text())
    assert 0.9 * 4 * 240 * 180 < evaluation["pixels"] <= 4 * 240 * 180  # the 4 held-out frames, void excluded
