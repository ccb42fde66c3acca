"""The optimiser and its schedule: poly LR stepped per iteration (with warmup), freeze-BN for the second stage,
and the paper's BN momentum."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import bn_state, make_config
from deeplab.losses import SegmentationLoss
from deeplab.training import setup
from deeplab.training.engine import train_one_step
from deeplab.training.metrics_csv import read_metrics_csv
from deeplab.training.optim import BN_TYPES, build_optimizer, build_scheduler, poly_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def _lrs(iterations: int, warmup: int, steps: int, base: float = 0.01) -> list[float]:
    """The lr used at iterations 0..steps-1 with the scheduler stepped once per iteration."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = build_scheduler(optimizer, max_iterations=iterations, power=0.9, warmup=warmup)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_poly_schedule_per_iteration() -> None:
    base, iterations = 0.01, 100
    lrs = _lrs(iterations, 0, iterations)
    for it in (0, iterations // 2, iterations - 1):
        assert lrs[it] == pytest.approx(base * (1 - it / iterations) ** 0.9, rel=1e-12)
    assert lrs[0] == base and lrs[-1] > 0
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_warmup_is_linear_then_poly() -> None:
    base, warmup = 0.01, 10
    lrs = _lrs(100, warmup, 12, base)
    assert lrs[:warmup] == pytest.approx([base * (it + 1) / warmup for it in range(warmup)], rel=1e-12)
    assert lrs[warmup] == pytest.approx(base * (1 - warmup / 100) ** 0.9, rel=1e-12)
    assert poly_factor(5, 100, warmup=0) == pytest.approx((1 - 5 / 100) ** 0.9)


def test_runner_steps_the_schedule_once_per_iteration(straight_run: Path) -> None:
    """The lr logged at step s (1-based) is the one used for it: base·(1 − (s−1)/max)^0.9."""
    lrs = read_metrics_csv(straight_run / "metrics.csv")["lr"]
    assert [step for step, _ in lrs] == [1, 2, 3, 4, 5, 6]
    for step, lr in lrs:
        assert lr == pytest.approx(0.007 * (1 - (step - 1) / 6) ** 0.9, rel=1e-9)


def _tiny_model(mini_camvid: Path, tmp_path: Path, *overrides: str) -> nn.Module:
    config = make_config(mini_camvid, tmp_path, *overrides)
    return setup.build_training_model(config, num_classes=4, log=lambda *_: None)


def _one_step(model: nn.Module) -> None:
    torch.manual_seed(1)
    batch = (torch.randn(2, 3, 64, 96), torch.randint(0, 4, (2, 64, 96)))
    optimizer = build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, max_iterations=10, power=0.9, warmup=0)
    train_one_step(model, [batch], SegmentationLoss(), optimizer, scheduler, None, torch.device("cpu"), iteration=0)


def _conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: module.weight.detach().clone() for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d)}


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_batch_norm_keeps_statistics_and_affine(mini_camvid: Path, tmp_path: Path, freeze: bool) -> None:
    model = _tiny_model(mini_camvid, tmp_path)
    setup.set_train_mode(model, freeze)
    if freeze:
        assert all(not m.training and not any(p.requires_grad for p in m.parameters())
                   for m in model.modules() if isinstance(m, BN_TYPES))
        assert model.training
    before_bn, before_conv = bn_state(model), _conv_weights(model)
    _one_step(model)
    after_bn, after_conv = bn_state(model), _conv_weights(model)
    changed_bn = [k for k in before_bn if not torch.equal(before_bn[k], after_bn[k])]
    if freeze:
        assert changed_bn == []
    else:  # the same step without freezing moves statistics and affine parameters (the test can fail)
        assert any(k.endswith("running_mean") for k in changed_bn) and any(k.endswith("weight") for k in changed_bn)
    assert sum(not torch.equal(before_conv[k], after_conv[k]) for k in before_conv) > len(before_conv) // 2
    # After an evaluation the runner re-applies freeze-BN (model.train() alone would unfreeze the statistics).
    model.eval()
    setup.set_train_mode(model, freeze)
    assert all(m.training != freeze for m in model.modules() if isinstance(m, BN_TYPES))


def test_bn_momentum_is_the_papers_decay(mini_camvid: Path, tmp_path: Path) -> None:
    """Default train.bn_momentum 0.0003 = 1 − decay 0.9997, set on every BN layer by the runner's builder."""
    assert make_config(mini_camvid, tmp_path).train.bn_momentum == 0.0003
    model = _tiny_model(mini_camvid, tmp_path)
    momenta = {m.momentum for m in model.modules() if isinstance(m, BN_TYPES)}
    assert momenta == {0.0003}
    model = _tiny_model(mini_camvid, tmp_path, "train.bn_momentum=0.01")
    assert {m.momentum for m in model.modules() if isinstance(m, BN_TYPES)} == {0.01}
