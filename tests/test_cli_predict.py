"""``deeplab predict``: every output on real photos, bad files reported, no silent overwrite, globs, the ONNX
Runtime backend, and the dense CRF options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_predict_writes_every_output_and_reports_bad_files(tflite_file: Path, photos: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["predict", str(photos), "-w", str(tflite_file), "-o", str(out), "--areas", "--probabilities",
                 "--no-progress", "--threads", "2"])
    printed = capsys.readouterr()
    assert code == 1 and "broken.jpg" in printed.err and "3 of 4 inputs segmented" in printed.out
    labels = np.asarray(Image.open(out / "café photo.png"))
    photo = Image.open(photos / "café photo.jpg")
    assert Image.open(out / "café photo.png").mode == "P" and labels.shape == (photo.height, photo.width)
    assert set(np.unique(labels)) <= set(range(21)) and len(np.unique(labels)) > 1
    assert Image.open(out / "café photo_overlay.jpg").size == photo.size
    probs = np.load(out / "café photo_probs.npy")
    assert probs.shape == (21, photo.height, photo.width) and np.allclose(probs.sum(0), 1, atol=1e-2)
    assert (probs.argmax(0) == labels).mean() > 0.99  # float16 storage may flip exact ties only
    areas = json.loads((out / "café photo_areas.json").read_text())
    assert sum(c["pixels"] for c in areas["classes"].values()) == photo.width * photo.height


def test_predict_never_overwrites_unless_forced(tflite_file: Path, photos: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    image = photos / "café photo.jpg"
    out = tmp_path / "out"
    out.mkdir()
    (out / "café photo.png").write_bytes(b"precious")
    assert main(["predict", str(image), "-w", str(tflite_file), "-o", str(out), "--no-progress"]) == 1
    assert "exists (pass --force" in capsys.readouterr().err
    assert (out / "café photo.png").read_bytes() == b"precious"
    assert main(["predict", str(image), "-w", str(tflite_file), "-o", str(out), "--no-progress", "--force"]) == 0
    assert Image.open(out / "café photo.png").mode == "P"


def test_predict_with_glob_and_missing_input(tflite_file: Path, photos: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", str(photos / "2007_*.jpg"), str(photos / "nope.jpg"), "-w", str(tflite_file),
                 "-o", str(tmp_path / "o"), "--no-progress", "--no-overlay"])
    printed = capsys.readouterr().err
    assert code == 1 and "nope.jpg: no such file or folder" in printed
    assert len(list((tmp_path / "o").glob("*.png"))) == 2 and not list((tmp_path / "o").glob("*.jpg"))


def test_onnx_backend_gives_the_torch_labels(photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from deeplab.data.normalization import IMAGENET
    from deeplab.export import export_onnx
    from deeplab.models import deeplabv3
    from deeplab.weights.card import ModelCard
    from deeplab.weights.modelfile import save_model

    torch.manual_seed(0)
    model = deeplabv3(backbone="mobilenet_v2", width_mult=0.5, num_classes=4).eval()
    card = ModelCard(model.config, list("abcd"), IMAGENET)
    save_model(model, tmp_path / "m.pt", card)
    export_onnx(model, tmp_path / "m.onnx", card=card)
    image = str(photos / "café photo.jpg")
    assert main(["predict", image, "-w", str(tmp_path / "m.pt"), "-o", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["predict", image, "-w", str(tmp_path / "m.onnx"), "--backend", "onnxruntime",
                 "-o", str(tmp_path / "b"), "--no-progress"]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "café photo.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "café photo.png"))
    assert (a == b).mean() > 0.999
    # A torch model file on --backend onnxruntime: converted on the fly, the same labels.
    assert main(["predict", image, "-w", str(tmp_path / "m.pt"), "--backend", "onnxruntime",
                 "-o", str(tmp_path / "c"), "--no-progress"]) == 0
    assert (np.asarray(Image.open(tmp_path / "c" / "café photo.png")) == a).mean() > 0.999
    # The exported file on OpenVINO (f32): the same labels; it cannot become a torch model again.
    pytest.importorskip("openvino")
    assert main(["predict", image, "-w", str(tmp_path / "m.onnx"), "--backend", "openvino",
                 "-o", str(tmp_path / "d"), "--no-progress"]) == 0
    assert (np.asarray(Image.open(tmp_path / "d" / "café photo.png")) == a).mean() > 0.999
    assert main(["predict", image, "-w", str(tmp_path / "m.onnx"), "--backend", "torch",
                 "-o", str(tmp_path / "e"), "--no-progress"]) == 2  # an exported graph runs as it was exported


def test_crf_options(tflite_file: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pydensecrf")
    image = str(photos / "café photo.jpg")
    common = ["predict", image, "-w", str(tflite_file), "--no-progress", "--no-overlay"]
    assert main(common + ["-o", str(tmp_path / "plain")]) == 0
    assert main(common + ["-o", str(tmp_path / "crf"), "--crf-param", "iterations=5", "--crf-param", "bi_w=6"]) == 0
    plain = np.asarray(Image.open(tmp_path / "plain" / "café photo.png"))
    refined = np.asarray(Image.open(tmp_path / "crf" / "café photo.png"))
    assert plain.shape == refined.shape and 0 < (plain != refined).mean() < 0.2  # CRF moves boundaries only
    assert main(common + ["-o", str(tmp_path / "x"), "--crf-param", "sigma=3"]) == 2
    assert "KEY one of iterations" in capsys.readouterr().err
