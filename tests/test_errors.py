"""One line, never a traceback, for a user's mistake: resuming another architecture or another schedule, a bad
label under --no-check (read by a loader worker too), CUDA asked for where there is none, 0/255 masks and the
label map that fixes them, a folder dataset without split files, a pickle with code in it, predict's errors,
out-of-range options, eval's batch size, check-data's JSON, refused runs leaving nothing behind."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import copy_camvid, make_config, single_thread, step_losses
from deeplab.cli import main
from deeplab.config import save_config
from deeplab.training import runner

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(config, *args: str) -> int:
    path = Path(config.output_dir).parent / f"{config.name}-{Path(config.output_dir).name}.yaml"
    save_config(config, path)
    return main(["train", "-c", str(path), "--no-progress", *args])


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _resumed_with(mini_camvid: Path, straight_run: Path, tmp_path: Path, *changes: str):
    """The straight run's folder, and its config with ``changes``: resuming it must be refused."""
    shutil.copytree(straight_run, tmp_path / "run")
    return make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=3", "train.keep_last=2",
                       *changes)


def test_resuming_another_architecture_is_one_line(mini_camvid: Path, straight_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = _resumed_with(mini_camvid, straight_run, tmp_path, "model.width_mult=1.0", "train.iterations=8")
    assert _train(config, "--no-check") == 2
    err = _one_line(capsys.readouterr().err)
    assert "checkpoint_0000006.pt was trained with other settings" in err and "model.width_mult 0.5 → 1.0" in err
    assert _train(config, "--no-check", "--set", "train.resume_changes=warn") == 2  # accepted, but cannot load
    err = _one_line(capsys.readouterr().err)
    assert "checkpoint_0000006.pt: does not match the model" in err and "shape mismatches" in err
    assert "file (" in err and "vs model (" in err


def test_resuming_with_another_schedule_is_refused_or_warned(mini_camvid: Path, straight_run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    changed = _resumed_with(mini_camvid, straight_run, tmp_path, "train.batch_size=4", "train.iterations=8")
    assert _train(changed, "--no-check") == 2
    err = _one_line(capsys.readouterr().err)
    assert "train.batch_size 2 → 4" in err and "train.iterations 6 → 8" in err and "resume_changes=warn" in err
    harmless = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=5",
                           "train.keep_last=3")  # when to evaluate and how many to keep: not the schedule
    with single_thread():
        result = runner.run_training(harmless, resume="auto", progress=False, check_data=False)
    assert result["iteration"] == 6
    warned = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.iterations=8",
                         "train.resume_changes=warn")
    with single_thread():
        runner.run_training(warned, resume="auto", progress=False, check_data=False)
    assert "warning: resuming" in capsys.readouterr().out and [s for s, _ in step_losses(warned.run_dir)][-1] == 8


@pytest.mark.parametrize("workers", [0, 1])
def test_an_out_of_range_label_names_its_file_even_unchecked(mini_camvid: Path, tmp_path: Path, workers: int,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "camvid"
    shutil.copytree(mini_camvid, root)
    bad = sorted((root / "trainannot").glob("*.png"))[1]
    mask = np.asarray(Image.open(bad)).copy()
    mask[:5, :5] = 30
    Image.fromarray(mask, mode="L").save(bad)
    config = make_config(root, tmp_path / "runs", "data.max_train_images=4", f"data.workers={workers}")
    assert _train(config, "--no-check") == 2
    err = _one_line(capsys.readouterr().err)
    assert f"{bad}: label values [30] are outside 0..10" in err
    assert multiprocessing.active_children() == []  # the failed run's loader workers are gone, not left to gc


def test_cuda_where_there_is_none_is_one_line(tflite_file: Path, photos: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = str(photos / "café photo.jpg")
    assert main(["predict", image, "-w", str(tflite_file), "-o", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is available here" in _one_line(capsys.readouterr().err)
    assert main(["eval", "-w", str(tflite_file), "--dataset", "voc", "--root", str(photos), "--device", "gpu0"]) == 2
    assert "is not a device" in _one_line(capsys.readouterr().err)


def _folder_dataset(shared_data: Path, root: Path, binary: bool) -> tuple[Path, Path]:
    """Six real CamVid frames as a plain folder dataset; ``binary``: masks of 0 and 255 (Car = 255)."""
    copy_camvid(shared_data / "camvid", root, "train", 6, (240, 180), start=100)
    images, masks = root / "train", root / "trainannot"
    for path in masks.glob("*.png"):
        mask = np.asarray(Image.open(path))
        if binary:
            mask = np.where(mask == 8, 255, 0).astype(np.uint8)
        else:
            mask = np.where(mask == 11, 255, mask).astype(np.uint8)  # void as the folder default's ignore 255
        Image.fromarray(mask, mode="L").save(path)
    return images, masks


def test_binary_masks_get_a_hint_that_works(shared_data: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    images, masks = _folder_dataset(shared_data, tmp_path / "data", binary=True)
    args = ["check-data", "--dataset", "folder", "--images", str(images), "--masks", str(masks),
            "--classes", "background,car", "--no-progress"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "looks like a binary 0/255 mask" in out and "--label-map 255:1" in out
    assert main([*args, "--label-map", "255:1"]) == 0  # the hint, followed
    assert main([*args, "--ignore-index", "255"]) == 0  # the other reading of the hint
    assert main([*args, "--label-map", "255"]) == 2
    assert "VALUE:LABEL" in _one_line(capsys.readouterr().err)


def test_a_folder_dataset_trains_without_split_files(shared_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    images, masks = _folder_dataset(shared_data, tmp_path / "data", binary=False)
    config = make_config(tmp_path, tmp_path / "runs", "data.dataset=folder", f"data.images={images}",
                         f"data.masks={masks}", "data.val_fraction=0.34", "train.iterations=2",
                         "data.classes=[Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, "
                         "Pedestrian, Bicyclist]")
    with single_thread():
        result = runner.run_training(config, resume=None, progress=False, check_data=True)
    out = capsys.readouterr().out
    assert "no val split given: validating on 2 of 6 pairs (data.val_fraction=0.34, seed 0), training on 4" in out
    assert result["iteration"] == 2 and result["pixels"] > 0
    binary = make_config(tmp_path, tmp_path / "runs2", "data.dataset=folder", f"data.images={images}",
                         f"data.masks={masks}", "data.label_map={255: 1}", "data.classes=[background, x]")
    assert binary.data.label_map == {255: 1}


def test_a_pickle_with_code_is_refused_saying_what_to_do(photos: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "x": Payload()}, path)
    assert main(["predict", str(photos / "café photo.jpg"), "-w", str(path), "-o", str(tmp_path / "o")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "holds code this tool will not run (it pickles print" in err and "safetensors" in err
    assert "weights_only" not in err and "ran" not in capsys.readouterr().out


def test_predict_reports_each_error_once_on_stderr(tflite_file: Path, photos: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", str(photos), str(photos / "nope.jpg"), "-w", str(tflite_file), "-o",
                 str(tmp_path / "o"), "--no-progress", "--no-overlay"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("broken.jpg") == 1 and captured.err.count("nope.jpg") == 1
    assert "broken.jpg" not in captured.out and "3 of 5 inputs segmented" in captured.out
    assert main(["predict", str(photos), "-w", str(tflite_file), "-o", str(tmp_path / "p"), "--alpha", "5"]) == 2
    assert "alpha must be in [0, 1]" in _one_line(capsys.readouterr().err)


def test_eval_batch_size_batches(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplab.inference.predictor import Predictor
    from deeplab.models import deeplabv3
    from deeplab.weights.modelfile import save_model

    model = save_model(deeplabv3(backbone="mobilenet_v2", width_mult=0.5, num_classes=11), tmp_path / "m.pt")
    sizes = []
    real = Predictor.predict_batch
    monkeypatch.setattr(Predictor, "predict_batch", lambda self, images: sizes.append(len(images)) or real(self, images))
    args = ["eval", "-w", str(model), "--dataset", "camvid", "--root", str(shared_data / "camvid"),
            "--split", "val", "--limit", "5", "--no-progress"]
    assert main([*args, "--batch-size", "2"]) == 0 and sizes == [2, 2, 1]  # 360×480 frames: one bucket
    sizes.clear()
    assert main([*args, "--batch-size", "5"]) == 0 and sizes == [5]


def test_check_data_json_counts_skipped_only_when_skipping(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "camvid"
    copy_camvid(shared_data / "camvid", root, "val", 3, (96, 72))
    (root / "val" / sorted(p.name for p in (root / "val").iterdir())[0]).write_bytes(b"broken")
    out = tmp_path / "r.json"
    args = ["check-data", "--dataset", "camvid", "--root", str(root), "--split", "val", "--no-progress",
            "--json", str(out)]
    assert main(args) == 1 and json.loads(out.read_text())["skipped"] == 0
    assert main([*args, "--skip-bad"]) == 0 and json.loads(out.read_text())["skipped"] == 1


def test_a_refused_run_leaves_no_run_folder(mini_camvid: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "camvid"
    shutil.copytree(mini_camvid, root)
    (root / "train" / sorted(p.name for p in (root / "train").iterdir())[0]).write_bytes(b"broken")
    config = make_config(root, tmp_path / "runs")
    assert _train(config) == 2  # the data scan refuses it
    assert "problem(s) found before training" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # not the run folder, nor the output folder made for it


def test_a_damaged_checkpoint_message_is_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deeplab.models import deeplabv3
    from deeplab.weights.modelfile import save_model

    path = save_model(deeplabv3(backbone="resnet18", num_classes=3), tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[:5000])
    assert main(["convert", str(path), str(tmp_path / "out.pt")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(path) in err and err.rstrip().endswith((")", "…)"))
