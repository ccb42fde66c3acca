"""The training loss: cross-entropy over labelled pixels, an all-ignore crop giving 0 (not NaN), class weights,
the auxiliary loss, and one normaliser for the whole step (micro-batches and ranks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeplab.losses import SegmentationLoss
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
