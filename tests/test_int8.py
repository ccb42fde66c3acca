"""int8 (ONNX Runtime static quantization) on the authors' model: the mIoU it costs on real VOC labels, with
calibration images disjoint from the evaluated ones; the refusals that name what is missing; the benchmark
row."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from deeplab.cli import main
from deeplab.utils.machine import has_vnni

pytest.importorskip("onnxruntime")
EVALUATED = 40  # the first 40 of val_dev (sorted); calibration takes 8 of the last ones


@pytest.fixture(scope="module")
def calibration(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for photo in sorted((shared_data / "voc2012_val_dev" / "JPEGImages").glob("*.jpg"))[-8:]:
        shutil.copy(photo, folder)
    return folder


def _eval(tflite_file: Path, shared_data: Path, out: Path, *extra: str) -> dict:
    assert main(["eval", "-w", str(tflite_file), "--dataset", "voc", "--root", str(shared_data / "voc2012_val_dev"),
                 "--split", "val_dev.txt", "--limit", str(EVALUATED), "--no-progress", "--json", str(out),
                 *extra]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_int8_costs_little_miou_on_real_labels(tflite_file: Path, shared_data: Path, calibration: Path,
                                               tmp_path: Path) -> None:
    fp32 = _eval(tflite_file, shared_data, tmp_path / "fp32.json")
    int8 = _eval(tflite_file, shared_data, tmp_path / "int8.json", "--precision", "int8", "--calibration",
                 str(calibration))
    assert (int8["backend"], int8["precision"]) == ("onnxruntime", "int8")
    assert fp32["images"] == int8["images"] == EVALUATED
    loss = 100 * (fp32["miou"] - int8["miou"])
    # measured 1.09 with VNNI (1.21 on 92 images); without it (7-bit weights, AVX2 EPYC) 4.60, and 17 before
    # the 7-bit weights — the saturation this bound would catch
    assert -0.5 < loss <= (1.5 if has_vnni() else 5.5), loss
    assert int8["pixel_accuracy"] > fp32["pixel_accuracy"] - (0.01 if has_vnni() else 0.025)  # 1.4 points without


def test_int8_refusals_name_what_is_missing(tflite_file: Path, photos: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    image = str(photos / "café photo.jpg")
    base = ["predict", image, "-w", str(tflite_file), "-o", str(tmp_path / "out"), "--precision", "int8"]
    assert main(base) == 2
    assert "--precision int8 needs --calibration FOLDER" in capsys.readouterr().err
    assert main(base + ["--backend", "openvino", "--calibration", str(photos)]) == 2
    assert "--precision int8 runs on --backend onnxruntime" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(base + ["--calibration", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"{empty}: no calibration images in this folder" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_benchmark_times_the_int8_path(tflite_file: Path, shared_data: Path, calibration: Path,
                                       tmp_path: Path) -> None:
    photo = shared_data / "voc2012_val_dev" / "JPEGImages" / "2007_000187.jpg"
    assert main(["benchmark", "-w", str(tflite_file), "--size", "129,161", "--precision", "int8", "--calibration",
                 str(calibration), "--repeats", "2", "--warmup", "1", "--photo", str(photo), "--json",
                 str(tmp_path / "b.json")]) == 0
    rows = {r["path"]: r for r in json.loads((tmp_path / "b.json").read_text())["results"]}
    assert set(rows) == {"torch eager fp32", "onnxruntime int8"}
    assert rows["onnxruntime int8"]["agreement"] > 0.95 and rows["onnxruntime int8"]["median_ms"] > 0


def test_a_server_runs_int8_like_the_offline_int8_predictor(tflite_file: Path, shared_data: Path,
                                                             calibration: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    import io

    import numpy as np
    from PIL import Image

    from deeplab.data.io import read_image
    from deeplab.export.fast_predictor import fast_predictor
    from deeplab.export.quantize import calibration_for
    from deeplab.export.runtimes import InferencePath
    from deeplab.inference.loading import load_any
    from deeplab.serve.launcher import ServerProcess

    photo = sorted((shared_data / "voc2012_val_dev" / "JPEGImages").glob("*.jpg"))[0]  # not a calibration image
    loaded = load_any(tflite_file)
    offline = fast_predictor(loaded, InferencePath("onnxruntime", "int8"),
                             calibration=calibration_for(calibration, loaded.card.normalization, required=True))
    expected = offline.predict([read_image(photo)])[0].labels
    with ServerProcess(tflite_file, "--precision", "int8", "--calibration", str(calibration)) as running:
        model = httpx.get(f"{running.url}/v1/model").json()
        assert (model["backend"], model["precision"]) == ("onnxruntime", "int8")
        answer = httpx.post(f"{running.url}/v1/segment", content=photo.read_bytes(), timeout=60)
        assert answer.status_code == 200
        assert (np.asarray(Image.open(io.BytesIO(answer.content))) == expected).mean() > 0.999


def test_serve_refuses_int8_without_calibration(tflite_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn")
    assert main(["serve", "-w", str(tflite_file), "--precision", "int8"]) == 2
    assert "--precision int8 needs --calibration FOLDER" in capsys.readouterr().err
    assert main(["serve", "-w", str(tflite_file), "--precision", "int8", "--backend", "openvino"]) == 2
    assert "--precision int8 runs on --backend onnxruntime" in capsys.readouterr().err


def test_auto_weighs_int8_when_calibration_is_given(tflite_file: Path, photos: Path, calibration: Path,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(photos / "café photo.jpg"), "-w", str(tflite_file), "-o", str(tmp_path / "out"),
                 "--backend", "auto", "--precision", "auto", "--calibration", str(calibration)]) == 0
    picked = [line for line in capsys.readouterr().err.splitlines() if line.startswith("auto:")]
    assert len(picked) == 1 and "onnxruntime int8" in picked[0] and "torch fp32" in picked[0]
    chosen = picked[0].split("→")[-1].strip()
    agreement = re.search(rf"{chosen} \d+ ms \(([\d.]+) % agree\)", picked[0])
    assert agreement and float(agreement.group(1)) >= 99.5  # whatever it chose kept the declared tolerance
