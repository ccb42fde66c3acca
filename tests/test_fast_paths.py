"""The fast inference paths: batch norm folded into the convolutions (exact, every architecture, output stride
still switchable); ONNX Runtime and OpenVINO f32 equal to eager on a real photo; bf16 (on CPUs with bf16
instructions) within 0.3 mIoU of fp32 on real VOC labels; ``--backend``/``--precision`` on the command line
(``auto`` says what it picked; bf16 refused where it would be emulated); ``deeplab benchmark``'s figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import randomise_bn_stats
from deeplab.cli import main
from deeplab.data.datasets import voc_dataset
from deeplab.data.io import read_image
from deeplab.export.fast_predictor import fast_predictor
from deeplab.export.runtimes import InferencePath, build_runner
from deeplab.inference.evaluation import evaluate
from deeplab.inference.loading import load_any
from deeplab.models.folding import fold_batchnorm
from deeplab.models.registry import get_model, list_models
from deeplab.utils.machine import has_fast_bf16

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
needs_bf16 = pytest.mark.skipif(not has_fast_bf16(), reason="this CPU has no AVX512-BF16/AMX")
SMALL = [name for name in list_models() if not any(big in name for big in ("101", "152", "50", "xception", "vgg"))]


@pytest.mark.parametrize("name", SMALL + ["deeplabv3_xception65", "deeplabv1_vgg16"])
def test_folding_batch_norm_is_exact_for_every_architecture(name: str) -> None:
    torch.manual_seed(0)
    model = randomise_bn_stats(get_model(name, num_classes=5).eval(), 1)
    folded, left = fold_batchnorm(model)
    assert left == [] and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 97, 129)
    with torch.no_grad():
        expected, got = model(x), folded(x)
        scale = expected.abs().max()
        assert (got - expected).abs().max() <= 1e-4 * scale
        if hasattr(model, "at_output_stride") and "vgg" not in name:
            with model.at_output_stride(8), folded.at_output_stride(8):
                assert (folded(x) - model(x)).abs().max() <= 1e-4 * model(x).abs().max()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) or "vgg" in name  # the original untouched


@pytest.fixture(scope="module")
def authors(tflite_file: Path):
    return load_any(tflite_file)


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> torch.Tensor:
    name = (shared_data / "voc2012_val_dev" / "val_dev.txt").read_text().split()[0]
    return read_image(shared_data / "voc2012_val_dev" / "JPEGImages" / f"{name}.jpg")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_fp32_paths_equal_eager_on_a_real_photo(authors, photo, backend: str) -> None:
    pytest.importorskip({"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[backend])
    x = authors.card.normalization.to_tensor(photo)
    with torch.inference_mode():
        expected = authors.model(x)
        got = build_runner(authors.model, InferencePath(backend, "fp32"))(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max() < 1e-3 * expected.abs().max()
    assert (got.argmax(1) == expected.argmax(1)).double().mean() > 0.9995


@needs_bf16
@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_bf16_loses_at_most_0_3_miou_on_real_labels(tflite_file: Path, shared_data: Path, backend: str) -> None:
    pytest.importorskip(backend)
    dataset = voc_dataset(shared_data / "voc2012_val_dev", "val_dev")
    scores = {}
    for precision in ("fp32", "bf16"):
        predictor = fast_predictor(load_any(tflite_file), InferencePath(backend, precision))  # folds in place
        scores[precision] = evaluate(predictor, dataset, limit=25, progress=False).matrix.miou
    assert abs(scores["bf16"] - scores["fp32"]) <= 0.003, scores
    assert scores["fp32"] > 0.6  # the authors' model, really


def test_bf16_is_refused_where_it_would_be_emulated(tflite_file: Path, photo, tmp_path: Path, monkeypatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import deeplab.export.runtimes as runtimes

    monkeypatch.setattr(runtimes, "has_fast_bf16", lambda: False)
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(photo).save(image)
    assert main(["predict", str(image), "-w", str(tflite_file), "-o", str(tmp_path / "o"), "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither AVX512-BF16 nor AMX" in err


def test_the_command_line_runs_openvino_and_auto_says_what_it_picked(tflite_file: Path, photos: Path,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openvino")
    (photos / "broken.jpg").unlink()
    args = [str(photos), "-w", str(tflite_file), "--no-progress", "--no-overlay"]
    assert main(["predict", *args, "-o", str(tmp_path / "torch")]) == 0
    assert main(["predict", *args, "-o", str(tmp_path / "ov"), "--backend", "openvino"]) == 0
    from PIL import Image

    for png in (tmp_path / "torch").glob("*.png"):
        same = (np.asarray(Image.open(png)) == np.asarray(Image.open(tmp_path / "ov" / png.name))).mean()
        assert same > 0.999, (png.name, same)
    capsys.readouterr()
    assert main(["predict", *args, "-o", str(tmp_path / "auto"), "--backend", "auto"]) == 0
    picked = [line for line in capsys.readouterr().err.splitlines() if line.startswith("auto:")]
    assert len(picked) == 1 and "torch fp32" in picked[0] and "openvino fp32" in picked[0] and "→" in picked[0]


def test_benchmark_prints_and_writes_every_paths_figures(shared_data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    photo = shared_data / "voc2012_val_dev" / "JPEGImages" / "2007_000187.jpg"
    assert main(["benchmark", "--model", "deeplabv3_mobilenet_v2", "--size", "97,129", "--compare", "--repeats", "2",
                 "--warmup", "1", "--photo", str(photo), "--json", str(tmp_path / "b.json"),
                 "--png", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "compute rates here (peaks: best convolution): fp32" in out and "load average" in out
    result = json.loads((tmp_path / "b.json").read_text())
    paths = [r["path"] for r in result["results"]]
    assert paths[0] == "torch eager fp32" and {"torch fp32", "onnxruntime fp32", "openvino fp32"} <= set(paths)
    assert result["flops"] > 0 and result["peaks_gflops"]["fp32"] > 0
    for r in result["results"]:
        assert r["runs"] == 2 and r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["gflops"] == pytest.approx(result["flops"] / (r["median_ms"] / 1000) / 1e9, rel=1e-6)
        if r["precision"] == "fp32":
            assert r["agreement"] > 0.999 and r["max_abs_diff"] < 1e-2
    assert result["results"][0]["vs_baseline"] == 1.0
    from PIL import Image

    assert Image.open(tmp_path / "b.png").size[0] == 900


@pytest.mark.slow
def test_the_compiled_path_equals_eager(tflite_file: Path, shared_data: Path, tmp_path: Path) -> None:
    """torch.compile (inductor, frozen weights) on the authors' model and a real photo, through deeplab benchmark
    in a process of its own: inductor's generated code crashed (SIGSEGV) in a test process that had loaded
    many other native libraries before, never in a fresh one."""
    import shutil

    from conftest import deeplab_cli

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile's CPU code generation needs a C++ compiler")
    photo = shared_data / "voc2012_val_dev" / "JPEGImages" / "2007_000187.jpg"
    run = deeplab_cli("benchmark", "-w", str(tflite_file), "--size", "97,129", "--compile", "--repeats", "1",
                      "--warmup", "1", "--photo", str(photo), "--json", str(tmp_path / "b.json"), cwd=tmp_path,
                      timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["path"]: r for r in json.loads((tmp_path / "b.json").read_text())["results"]}
    assert rows["torch+compile fp32"]["agreement"] > 0.9995 and rows["torch+compile fp32"]["max_abs_diff"] < 1e-2


def test_openvino_compiles_each_input_shape_once(authors) -> None:
    pytest.importorskip("openvino")
    from deeplab.export.runtimes import OpenVinoRunner

    runner = OpenVinoRunner(authors.model, max_shapes=2)
    for size in [(65, 97), (97, 65), (65, 97), (33, 33)]:
        x = torch.randn(1, 3, *size)
        with torch.inference_mode():
            assert (runner(x) - authors.model(x)).abs().max() < 1e-3
    assert list(runner.compiled) == [(1, 3, 65, 97), (1, 3, 33, 33)]  # the two most recent, (97, 65) evicted


def test_openvino_leaves_the_threads_signal_stack_as_it_found_it(authors) -> None:
    """OpenVINO swaps the calling thread's alternate signal stack on compile and back on release; released
    out of order, the thread was left on freed memory and the next Python signal handler (SIGCHLD, installed
    by DataLoader workers) crashed the process. Every compile and release must leave it as it was."""
    pytest.importorskip("openvino")
    from deeplab.export.runtimes import OpenVinoRunner
    from deeplab.utils.signal_stack import current_signal_stack

    before = current_signal_stack()
    if before is None:
        pytest.skip("alternate signal stacks are read on Linux only")
    first, second = OpenVinoRunner(authors.model, max_shapes=1), OpenVinoRunner(authors.model, max_shapes=1)
    x = torch.randn(1, 3, 33, 49)
    with torch.inference_mode():
        first(x), second(x), first(torch.randn(1, 3, 49, 33))  # the last one evicts a compiled model
    assert current_signal_stack() == before
    del first  # released before the one compiled after it: the order that broke
    assert current_signal_stack() == before
    del second
    assert current_signal_stack() == before


def test_benchmark_checks_agreement_on_a_photo_of_the_models_dataset(straight_run: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A CamVid model is compared with fp32 on a CamVid street, not on the VOC default."""
    assert main(["benchmark", "-w", str(straight_run / "best.pt"), "--size", "65,97", "--repeats", "1",
                 "--warmup", "1"]) == 0
    assert "agreement on 0016E5_07959.png" in capsys.readouterr().out
