"""Shared test fixtures: where the real data lives (``../shared`` beside the repo, or $DEEPLAB_SHARED), a mini
CamVid copied from it, the tiny training config and a straight 6-step run that several test modules compare
against, and helpers to run ``deeplab train`` in a new process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab.config import Config, load_config
from deeplab.training import runner
from deeplab.training.metrics_csv import read_metrics_csv
from deeplab.training.state import load_training_checkpoint

pytest_plugins = ["inference_fixtures"]  # the calibrated models and real images of the inference tests

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPLAB_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
# A width-0.5 MobileNetV2 with the mobile ASPP: the smallest model that trains like the real ones.
TINY_MODEL = ["model.backbone=mobilenet_v2", "model.width_mult=0.5", "model.aspp_rates=[]"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} not found (set DEEPLAB_SHARED)")
    return DATA


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread here and in the subprocesses (OMP_NUM_THREADS=1): on a busy 2-core machine two
    OpenMP threads made the tiny training steps ~5× slower (spinning barriers). Every run of a comparison uses
    the same thread count, so bit-exact comparisons between this process and subprocesses hold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


def copy_camvid(src: Path, dst: Path, split: str, count: int, size: tuple[int, int], start: int = 0) -> None:
    """``count`` real CamVid pairs from the ``start``-th (in name order) resized to ``size`` (W, H): image
    bilinear, mask nearest (void kept)."""
    (dst / split).mkdir(parents=True, exist_ok=True)
    (dst / f"{split}annot").mkdir(exist_ok=True)
    for path in sorted((src / split).glob("*.png"))[start:start + count]:
        Image.open(path).convert("RGB").resize(size, Image.Resampling.BILINEAR).save(dst / split / path.name)
        mask = np.asarray(Image.open(src / f"{split}annot" / path.name).resize(size, Image.Resampling.NEAREST))
        Image.fromarray(mask, mode="L").save(dst / f"{split}annot" / path.name)


@pytest.fixture(scope="session")
def mini_camvid(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training images at 240×180 (random scale 0.5..2 never needs padding for a 64×96 crop) and 3
    validation images at 96×72, with CamVid's void pixels (→ ignore)."""
    root = tmp_path_factory.mktemp("camvid_mini")
    copy_camvid(shared_data / "camvid", root, "train", 8, (240, 180))
    copy_camvid(shared_data / "camvid", root, "val", 3, (96, 72))
    return root


def make_config(root: Path, output_dir: Path, *overrides: str, name: str = "run") -> Config:
    """The tiny training run: 64×96 crops, batches of 2, 6 steps, checkpoints every 2, every loss logged."""
    return load_config(None, [*TINY_MODEL, "data.dataset=camvid", f"data.root={root}", "data.crop_size=[64, 96]",
                              "data.workers=0", "train.batch_size=2", "train.iterations=6", "train.log_every=1",
                              "train.eval_every=1000", "train.checkpoint_every=2", f"output_dir={output_dir}",
                              f"name={name}", *overrides])


def deeplab_cli(command: str, *args: str, cwd: Path, torchrun: int = 0,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """``deeplab COMMAND`` in a new process (or ``torchrun --nproc-per-node N -m deeplab COMMAND``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "deeplab"]
    if torchrun:
        # pytorch#135712: without this, torchrun's rendezvous store sharing failed or hung on torch 2.13 CPU.
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}",
                    "-m", "deeplab"]
    return subprocess.run([*launcher, command, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def train_cli(config_file: Path, *args: str, cwd: Path, torchrun: int = 0,
              timeout: float = 300) -> subprocess.CompletedProcess:
    return deeplab_cli("train", "-c", str(config_file), "--no-progress", *args, cwd=cwd, torchrun=torchrun,
                       timeout=timeout)


def step_losses(run_dir: Path) -> list[tuple[float, float]]:
    return read_metrics_csv(run_dir / "metrics.csv")["train loss"]


def state_dict_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_training_checkpoint(checkpoint).state_dict


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def straight_run(mini_camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A: 6 steps straight (4 images, batch 2 → 2 steps an epoch → 3 epochs), checkpoints every 2 steps,
    the last 2 kept, evaluations at steps 3 and 6, every step's loss logged."""
    out = tmp_path_factory.mktemp("straight")
    config = make_config(mini_camvid, out, "data.max_train_images=4", "train.eval_every=3", "train.keep_last=2")
    with single_thread():
        runner.run_training(config, resume=None, progress=False, check_data=False)
    return config.run_dir


def bn_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every batch-norm parameter and buffer, cloned: what freeze-BN must keep bit-identical."""
    from deeplab.training.optim import BN_TYPES

    return {f"{name}.{key}": value.clone() for name, module in model.named_modules() if isinstance(module, BN_TYPES)
            for key, value in {**dict(module.named_parameters(recurse=False)),
                               **dict(module.named_buffers(recurse=False))}.items()}


@pytest.fixture(scope="session")
def tflite_file(shared_data: Path) -> Path:
    """The authors' DeepLabV3 (MobileNetV2 ×0.5, VOC) as a TFLite file."""
    path = shared_data / "weights" / "deeplabv3_257_mv_gpu.tflite"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    pytest.importorskip("tflite")
    return path


@pytest.fixture()
def photos(shared_data: Path, tmp_path: Path) -> Path:
    """Three real VOC photos (one renamed with a space and non-ASCII) and one corrupt file, in one folder."""
    import shutil

    folder = tmp_path / "my photos"
    folder.mkdir()
    ids = (shared_data / "voc2012_val_dev" / "val_dev.txt").read_text().split()[:3]
    for i, name in enumerate(ids):
        target = folder / (f"{name}.jpg" if i else "café photo.jpg")
        shutil.copy(shared_data / "voc2012_val_dev" / "JPEGImages" / f"{name}.jpg", target)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    return folder


def message_of(error: pytest.ExceptionInfo) -> str:
    return str(error.value)


def assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    """A user-facing error: one line that names the file."""
    text = message_of(error)
    assert str(path) in text, text
    assert "\n" not in text, text


def randomise_bn_stats(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial running statistics, so a save/load that lost the buffers — or a graph exported in training
    mode (batch statistics) — would change the logits. Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def applied_dilations(model: torch.nn.Module, image: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Dilation and stride of every 3×3 conv *as called* in a forward pass (hooks see the real call)."""
    seen: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, _o, n=n: seen.__setitem__(n, (mod.dilation[0], mod.stride[0])))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    return seen
