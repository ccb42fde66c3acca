"""``deeplab eval``: mIoU of the authors' model on real VOC images, native and fixed-size protocols, JSON and
the confusion-matrix image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from deeplab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_eval_reports_miou_and_writes_json(tflite_file: Path, shared_data: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    args = ["eval", "-w", str(tflite_file), "--dataset", "voc", "--root", str(shared_data / "voc2012_val_dev"),
            "--split", "val_dev.txt", "--limit", "6", "--no-progress", "--json", str(out),
            "--confusion-png", str(tmp_path / "cm.png")]
    assert main(args) == 0
    native = json.loads(out.read_text())
    assert native["images"] == 6 and 0.5 < native["miou"] <= 1 and native["per_class"]["person"]["iou"] is not None
    assert Image.open(tmp_path / "cm.png").size[0] > 200
    assert main(args + ["--input-size", "257"]) == 0
    fixed = json.loads(out.read_text())
    assert fixed["protocol"] == "257x257 resize" and fixed["pixel_accuracy"] < native["pixel_accuracy"]
    assert "mIoU" in capsys.readouterr().out
