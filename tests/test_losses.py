"""The training loss: cross-entropy over labelled pixels, an all-ignore crop giving 0 (not NaN), class weights,
the auxiliary loss, one normaliser for the whole step (micro-batches and ranks), and hard-pixel mining."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import make_config, single_thread, step_losses
from deeplab.losses import SegmentationLoss
from deeplab.training import runner
from deeplab.training.engine import step_normaliser
from deeplab.utils.distributed import DistInfo


def test_all_ignore_crop_gives_zero_loss_and_zero_gradients() -> None:
    """F.cross_entropy gives NaN on a crop with no labelled pixel (seen); ours gives 0 and no gradient."""
    torch.manual_seed(0)
    target = torch.full((2, 5, 6), 255, dtype=torch.int64)
    assert F.cross_entropy(torch.randn(2, 4, 5, 6), target, ignore_index=255).isnan()  # why the guard exists
    for weights in (None, [0.5, 2.0, 1.0, 3.0]):
        logits = torch.randn(2, 4, 5, 6, requires_grad=True)
        loss = SegmentationLoss(class_weights=weights)(logits, target)
        assert torch.isfinite(loss) and loss.item() == 0.0
        loss.backward()
        assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_loss_matches_cross_entropy_weighted_mean_and_adds_aux() -> None:
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255  # mixed: some ignore pixels
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0])
    plain = F.cross_entropy(logits, target, ignore_index=255)
    weighted = F.cross_entropy(logits, target, weight=weights, ignore_index=255)
    assert not torch.allclose(plain, weighted)  # the weights matter on this target
    torch.testing.assert_close(SegmentationLoss()(logits, target), plain, rtol=1e-6, atol=0)
    loss_fn = SegmentationLoss(class_weights=weights, aux_weight=0.25)
    torch.testing.assert_close(loss_fn(logits, target), weighted, rtol=1e-6, atol=0)
    aux_loss = F.cross_entropy(aux, target, weight=weights, ignore_index=255)
    torch.testing.assert_close(loss_fn((logits, aux), target), weighted + 0.25 * aux_loss, rtol=1e-6, atol=0)


def test_shared_denominator_makes_split_batches_sum_to_the_whole_batch_mean() -> None:
    """Two crops with very different numbers of ignore pixels: each crop's loss over the step's normaliser
    sums to the whole batch's weighted mean (per-crop means averaged would give the mostly-ignore crop as much
    say as the full one — they differ here by a checked margin)."""
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 6, 8), torch.randint(0, 4, (2, 6, 8))
    target[1, 1:] = 255  # crop 1: one labelled row out of six
    for weights in (None, [0.5, 2.0, 1.0, 3.0]):
        loss_fn = SegmentationLoss(class_weights=weights)
        whole = loss_fn(logits, target)
        denominator = step_normaliser(loss_fn, [target[:1], target[1:]], DistInfo())
        torch.testing.assert_close(denominator, loss_fn.normaliser(target))
        parts = loss_fn(logits[:1], target[:1], denominator) + loss_fn(logits[1:], target[1:], denominator)
        torch.testing.assert_close(parts, whole, rtol=1e-6, atol=0)
        per_crop_means = (loss_fn(logits[:1], target[:1]) + loss_fn(logits[1:], target[1:])) / 2
        assert abs(per_crop_means - whole) > 1e-2


def test_top_k_keeps_the_hardest_labelled_pixels_and_only_they_get_gradients() -> None:
    """Hard-pixel mining: the loss is the mean of the largest ceil(f × labelled) per-pixel losses (the ignore
    pixels never count nor get picked), with class weights over f × the weighted normaliser, and every pixel
    left out gets exactly zero gradient."""
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255  # 12 ignore pixels: 48 labelled
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0])
    for class_weights in (None, weights):
        logits = torch.randn(2, 4, 5, 6, requires_grad=True)
        per_pixel = F.cross_entropy(logits.detach(), target, weight=class_weights, ignore_index=255, reduction="none")
        full = SegmentationLoss(class_weights=class_weights).normaliser(target)
        for fraction, kept in ((0.25, 12), (0.3, 15), (1.0, 48)):
            loss_fn = SegmentationLoss(class_weights=class_weights, keep_fraction=fraction)
            hardest = per_pixel[target != 255].sort(descending=True).values[:kept]
            torch.testing.assert_close(loss_fn.normaliser(target), full * fraction)
            torch.testing.assert_close(loss_fn(logits, target), hardest.sum() / (full * fraction), rtol=1e-6, atol=0)
        loss_fn = SegmentationLoss(class_weights=class_weights, keep_fraction=0.25)
        logits.grad = None
        loss_fn(logits, target).backward()
        touched = logits.grad.abs().sum(1) > 0
        threshold = per_pixel[target != 255].sort(descending=True).values[11]
        assert touched.sum() == 12 and torch.equal(touched, (per_pixel >= threshold) & (target != 255))
    plain = SegmentationLoss()(logits, target)
    assert SegmentationLoss(keep_fraction=0.25)(logits, target) > plain  # the hard quarter's mean exceeds the mean


def test_top_k_fraction_ramps_down_from_one_and_bad_settings_are_refused() -> None:
    from deeplab.losses import check_top_k, mining_fraction

    assert [mining_fraction(0.2, 100, step) for step in (0, 25, 50, 100, 500)] == pytest.approx([1.0, 0.8, 0.6, 0.2,
                                                                                                   0.2])
    assert mining_fraction(0.2, 0, 0) == pytest.approx(0.2) and mining_fraction(1.0, 100, 50) == 1.0
    check_top_k(1.0, 0)
    for fraction, ramp, message in ((0.0, 0, "top_k_pixels must be a fraction"), (1.5, 0, "top_k_pixels"),
                                    (0.2, -1, "top_k_ramp_iterations must be >= 0")):
        with pytest.raises(ValueError, match=message):
            check_top_k(fraction, ramp)


def test_mining_ramp_in_a_real_run_starts_as_the_plain_loss_then_picks_harder_pixels(
        straight_run: Path, mini_camvid: Path, tmp_path: Path) -> None:
    """The straight 6-step run on real CamVid frames again with top_k_pixels=0.25 ramped over 4 steps: step 1
    keeps every pixel, so its loss and update are the plain run's exactly; step 2 (the same weights and batch)
    keeps the hardest 81.25 %, whose mean loss is higher."""
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.eval_every=3", "train.keep_last=2",
                         "train.top_k_pixels=0.25", "train.top_k_ramp_iterations=4", "train.stop_after=2")
    with single_thread():
        runner.run_training(config, resume=None, progress=False, check_data=False)
    plain, mined = step_losses(straight_run), step_losses(config.run_dir)
    assert [step for step, _ in mined] == [1, 2]
    assert mined[0] == plain[0]
    assert mined[1][1] > plain[1][1] + 0.05
