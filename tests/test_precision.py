"""Training precision and memory format: a bf16-autocast, channels-last step follows the fp32 step closely (the
same direction, a small relative difference), an impossible precision is refused before any work."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from conftest import make_config
from deeplab.losses import SegmentationLoss
from deeplab.models import deeplabv3
from deeplab.training import runner
from deeplab.training.engine import autocast_dtype, bf16_fallback, train_one_step
from deeplab.training.optim import build_optimizer, build_scheduler


class _Stepped:
    def __init__(self, loss: float, state: dict[str, torch.Tensor]) -> None:
        self.loss, self.state = loss, state


def _step(model: torch.nn.Module, batch, **options) -> _Stepped:
    optimizer = build_optimizer(model, lr=0.05, momentum=0.9, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, max_iterations=10, power=0.9, warmup=0)
    result = train_one_step(model, [batch], SegmentationLoss(), optimizer, scheduler, None, torch.device("cpu"),
                            iteration=0, **options)
    return _Stepped(result.loss, model.state_dict())


def _batch(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real CamVid crops, normalised, with their labels (void → ignore)."""
    import numpy as np

    from deeplab.data.datasets import camvid_dataset
    from deeplab.data.normalization import IMAGENET

    samples = [camvid_dataset(root, "train").read(i) for i in (0, 5)]
    images = IMAGENET.to_tensor([s.image[:64, :96] for s in samples])
    return images, torch.from_numpy(np.stack([s.label[:64, :96] for s in samples]))


@pytest.mark.parametrize("options", [{"channels_last": True}, {"autocast": torch.bfloat16},
                                     {"autocast": torch.bfloat16, "channels_last": True}])
def test_fast_steps_follow_the_fp32_step(mini_camvid: Path, options: dict) -> None:
    """Channels-last is the same arithmetic in another order (the update agrees to rounding, amplified a little
    by batch statistics through the depth); bf16 keeps 8 bits of mantissa: its loss agrees to ~1 % and its
    update of a freshly initialised network is correlated with fp32's, no more (one step of an untrained net is
    mostly rounding noise; what bf16 training is worth is measured by a whole run, in the README)."""
    torch.manual_seed(0)
    start = deeplabv3(backbone="mobilenet_v2", width_mult=0.5, num_classes=11, aspp_dropout=0.0)
    batch = _batch(mini_camvid)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    reference = _step(copy.deepcopy(start), batch)
    fast_model = copy.deepcopy(start)
    if options.get("channels_last"):
        fast_model = fast_model.to(memory_format=torch.channels_last)
    fast = _step(fast_model, batch, **options)
    assert fast.loss == pytest.approx(reference.loss, rel=1e-5 if "autocast" not in options else 2e-2)
    keys = ("classifier.0.project.0.weight", "classifier.1.weight") if "autocast" in options else \
        ("backbone.features.0.0.weight", "backbone.features.10.conv.1.0.weight", "classifier.1.weight")
    for key in keys:
        expected = reference.state[key] - before[key]
        got = fast.state[key] - before[key]
        cosine = torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0)
        assert torch.isfinite(got).all() and got.abs().sum() > 0
        assert cosine > (1 - 1e-2 if "autocast" not in options else 0.25), (key, cosine.item())


def test_precision_names_and_refusals(mini_camvid: Path, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu, fast_bf16=True) == torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda")) == torch.float16
    assert autocast_dtype("bf16", torch.device("cuda"), fast_bf16=False) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        autocast_dtype("fp16", cpu)
    config = make_config(mini_camvid, tmp_path, "train.precision=half")
    with pytest.raises(ValueError, match="train.precision must be one of auto, fp32, bf16, fp16"):
        runner.run_training(config, resume=None, progress=False)
    assert not config.run_dir.exists()


def test_bf16_trains_in_fp32_where_the_cpu_would_emulate_it(mini_camvid: Path, tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    """A config written for a bf16 CPU runs on one without bf16 instructions in fp32, and says so."""
    cpu = torch.device("cpu")
    assert autocast_dtype("bf16", cpu, fast_bf16=False) is None
    assert bf16_fallback("bf16", cpu, fast_bf16=False).endswith("training in fp32")
    assert bf16_fallback("bf16", cpu, fast_bf16=True) is None and bf16_fallback("fp32", cpu, fast_bf16=False) is None
    monkeypatch.setattr("deeplab.training.engine.has_fast_bf16", lambda: False)
    config = make_config(mini_camvid, tmp_path, "train.precision=bf16", "train.iterations=1")
    runner.run_training(config, resume=None, progress=False)
    assert "would emulate bf16" in capsys.readouterr().out
