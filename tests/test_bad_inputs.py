"""A standing bad-input suite: randomly corrupted real files (truncated, bytes flipped, garbage inserted, random
bytes) fed to every loader — images, masks, model files, checkpoints, configs, the authors' ``.tflite`` — and
to ``deeplab check-data`` / ``predict``. Each must load or fail with a one-line user error naming the file
(ValueError / OSError / ImportError, the exit code 1 or 2 on the command line, no traceback), and no file that
existed before may change. Bounded in examples so the suite stays a few seconds."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deeplab.cli import main  # noqa: E402
from deeplab.config import load_config, save_config  # noqa: E402
from deeplab.data.io import read_image, read_label  # noqa: E402
from deeplab.inference.loading import load_any  # noqa: E402
from deeplab.models import deeplabv3  # noqa: E402
from deeplab.training.state import load_training_checkpoint  # noqa: E402
from deeplab.weights.card import ModelCard  # noqa: E402
from deeplab.weights.modelfile import save_model, write_model_file  # noqa: E402

USER_ERRORS = (ValueError, OSError, ImportError)
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def corruption(draw):
    """A function bytes → bytes: truncate, flip a run of bytes, insert garbage, or replace everything."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "random", "empty"]))
    at = draw(st.floats(0.0, 1.0))
    count = draw(st.integers(1, 64))
    noise = draw(st.binary(min_size=1, max_size=256))

    def corrupt(data: bytes) -> bytes:
        where = min(int(at * len(data)), max(len(data) - 1, 0))
        if kind == "truncate":
            return data[:where]
        if kind == "flip":
            flipped = bytearray(data)
            for i in range(where, min(where + count, len(data))):
                flipped[i] ^= 0xFF
            return bytes(flipped)
        if kind == "insert":
            return data[:where] + noise + data[where:]
        if kind == "random":
            return noise * (1 + len(data) // (len(noise) * 50))
        return b""

    return corrupt


def _one_line_naming(error: BaseException, path: Path) -> None:
    text = str(error)
    assert "\n" not in text.strip(), text
    assert str(path) in text or path.name in text, text


def _digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def originals(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real file of each kind."""
    folder = tmp_path_factory.mktemp("originals")
    model = deeplabv3(backbone="mobilenet_v2", width_mult=0.5, num_classes=3, aspp_rates=())
    files = {"image": shared_data / "voc2012_val_dev" / "JPEGImages" / "2007_000187.jpg",
             "png": shared_data / "camvid" / "val" / sorted(p.name for p in (shared_data / "camvid" / "val").iterdir())[0],
             "mask": shared_data / "voc2012_val_dev" / "SegmentationClass" / "2007_000187.png",
             "tflite": shared_data / "weights" / "deeplabv3_257_mv_gpu.tflite"}
    files["model"] = save_model(model, folder / "model.pt")
    files["safetensors"] = save_model(model, folder / "model.safetensors")
    files["checkpoint"] = write_model_file(folder / "checkpoint_0000002.pt", model, ModelCard.default(model.config),
                                           training={"iteration": 2})
    config = load_config(None, ["model.backbone=mobilenet_v2", "train.lr=0.01"])
    save_config(config, folder / "config.yaml")
    files["config"] = folder / "config.yaml"
    return files


def _corrupted(original: Path, corrupt, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / original.name
    path.write_bytes(corrupt(original.read_bytes()))
    return path


LOADERS = {"image": read_image, "png": read_image, "mask": read_label, "model": load_any, "safetensors": load_any,
           "checkpoint": load_training_checkpoint, "config": load_config, "tflite": load_any}


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_corrupted_files_load_or_fail_in_one_line(kind: str, originals: dict[str, Path], tmp_path: Path) -> None:
    if kind == "tflite":
        pytest.importorskip("tflite")
    original = originals[kind]

    @SETTINGS
    @given(corrupt=corruption())
    def check(corrupt) -> None:
        path = _corrupted(original, corrupt, tmp_path / "case")
        try:
            LOADERS[kind](path)
        except USER_ERRORS as error:
            _one_line_naming(error, path)

    check()


def test_check_data_and_predict_on_corrupted_files(originals: dict[str, Path], tflite_file: Path, shared_data: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    voc = shared_data / "voc2012_val_dev"

    @SETTINGS
    @given(corrupt_image=corruption(), corrupt_mask=corruption())
    def check(corrupt_image, corrupt_mask) -> None:
        root = tmp_path / "voc"
        shutil.rmtree(root, ignore_errors=True)
        (root / "JPEGImages").mkdir(parents=True)
        (root / "SegmentationClass").mkdir()
        ids = (voc / "val_dev.txt").read_text().split()[:2]
        for i in ids:
            shutil.copy(voc / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
            shutil.copy(voc / "SegmentationClass" / f"{i}.png", root / "SegmentationClass")
        (root / "list.txt").write_text("\n".join(ids) + "\n")
        bad_image = root / "JPEGImages" / f"{ids[0]}.jpg"
        bad_image.write_bytes(corrupt_image(bad_image.read_bytes()))
        bad_mask = root / "SegmentationClass" / f"{ids[1]}.png"
        bad_mask.write_bytes(corrupt_mask(bad_mask.read_bytes()))
        before = _digests(root)
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        capsys.readouterr()
        assert main(["check-data", "--dataset", "voc", "--root", str(root), "--split", "list.txt",
                     "--no-progress"]) in (0, 1, 2)
        code = main(["predict", str(root / "JPEGImages"), "-w", str(tflite_file), "-o", str(out), "--no-progress",
                     "--no-overlay"])
        captured = capsys.readouterr()
        assert code in (0, 1, 2) and "Traceback" not in captured.err
        assert all(line.startswith(("error:", "deeplab")) for line in captured.err.splitlines() if line), captured.err
        assert _digests(root) == before  # nothing the user had changed
        if out.exists():  # an image that failed left no outputs; one that worked left all of them
            stems = {p.stem for p in out.glob("*.png")}
            assert {p.name for p in out.iterdir()} == {f"{s}.png" for s in stems}

    check()
