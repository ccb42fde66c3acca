"""Activation checkpointing of the backbone: the same gradients and batch-norm statistics as without it, on
real images; the same parameter names; a training run whose every loss equals the plain run's; and the peak
memory it cuts, counted on fake tensors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import bn_state, make_config, single_thread, step_losses
from deeplab.benchmark.memory import training_peak_bytes
from deeplab.data.normalization import IMAGENET
from deeplab.models import deeplabv3
from deeplab.models.checkpointing import checkpoint_backbone, is_checkpointed
from deeplab.training import runner


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)  # the head's dropout draws the same mask in both steps
    model.train().zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("backbone, output_stride, blocks", [("resnet18", 8, 8), ("mobilenet_v2", 16, 17)])
def test_gradients_and_batch_norm_statistics_equal_the_plain_step(images, backbone, output_stride, blocks) -> None:
    x = IMAGENET.to_tensor(images["camvid_96x72"])  # 3 real CamVid frames
    torch.manual_seed(0)
    plain = deeplabv3(backbone=backbone, num_classes=4, output_stride=output_stride)
    with torch.no_grad():  # labels: a real segmentation of the frames (a fixed model's argmax), not noise
        y = plain.eval()(x).argmax(1)
    checkpointed = copy.deepcopy(plain)
    assert checkpoint_backbone(checkpointed) == blocks
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()
    assert sum(map(is_checkpointed, checkpointed.modules())) == blocks
    expected, got = _step(plain, x, y), _step(checkpointed, x, y)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert max(float(g.abs().max()) for g in expected.values()) > 1e-3  # a real gradient, not zeros
    plain_bn, checkpointed_bn = bn_state(plain), bn_state(checkpointed)  # recomputation did not move them again
    assert all(torch.equal(plain_bn[k], checkpointed_bn[k]) for k in plain_bn)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), checkpointed.eval()(x))  # inference is untouched


def test_checkpointing_cuts_the_peak_of_a_resnet_step_by_two_fifths() -> None:
    kwargs = dict(batch=8, size=(513, 513), num_classes=21, output_stride=8)
    build = lambda: deeplabv3(backbone="resnet50", num_classes=21)  # noqa: E731
    plain = training_peak_bytes(build, **kwargs)
    checkpointed = training_peak_bytes(build, checkpointing=True, **kwargs)
    assert plain["parameter"] == checkpointed["parameter"] == 4 * sum(p.numel() for p in build().parameters())
    assert plain["activation"] > 20 * plain["parameter"]  # 513² at OS8, batch 8: activations dominate
    assert checkpointed["total"] <= 0.6 * plain["total"], (checkpointed["total"], plain["total"])


def test_a_checkpointed_training_run_logs_the_plain_runs_losses(mini_camvid: Path, straight_run: Path,
                                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=3", "train.keep_last=2",
                         "train.activation_checkpointing=true", "train.stop_after=3")
    with single_thread():
        runner.run_training(config, resume=None, progress=False, check_data=False)
    got, expected = step_losses(config.run_dir), step_losses(straight_run)[:3]
    assert [s for s, _ in got] == [1, 2, 3]
    for (_, a), (_, b) in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-4)
    assert "activation checkpointing: 17 backbone blocks" in capsys.readouterr().out


def test_a_backbone_without_blocks_is_refused(mini_camvid: Path, tmp_path: Path) -> None:
    config = make_config(mini_camvid, tmp_path, "model.backbone=vgg16", "model.width_mult=1.0",
                         "train.activation_checkpointing=true")
    with pytest.raises(ValueError, match="vgg16 backbone has no residual blocks"):
        runner.run_training(config, resume=None, progress=False, check_data=False)
