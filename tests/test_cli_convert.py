"""``deeplab convert``: the authors' TFLite file becomes a model file that predicts exactly what the TFLite file
does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_convert_tflite_to_a_model_file(tflite_file: Path, photos: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mobile voc.safetensors"
    assert main(["convert", str(tflite_file), str(out)]) == 0
    assert "21 classes" in capsys.readouterr().out
    assert main(["convert", str(tflite_file), str(out)]) == 2  # exists: refused without --force
    image = str(photos / "café photo.jpg")
    assert main(["predict", image, "-w", str(out), "-o", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["predict", image, "-w", str(tflite_file), "-o", str(tmp_path / "b"), "--no-progress"]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "café photo.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / "café photo.png")))
