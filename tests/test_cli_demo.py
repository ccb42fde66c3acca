"""``deeplab demo``: runs on the real data and explains missing files in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_demo_runs_and_explains_missing_files(tflite_file: Path, shared_data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data", str(shared_data), "--output", str(tmp_path / "demo"), "--limit", "2",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and len(list((tmp_path / "demo").glob("*.jpg"))) == 2
    assert main(["demo", "--data", str(tmp_path / "empty"), "--output", str(tmp_path / "d2")]) == 2
    assert "deeplabv3_257_mv_gpu.tflite is missing: put" in capsys.readouterr().err
