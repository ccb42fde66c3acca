"""Known-answer tests for the confusion-matrix metrics (hand-computed)."""

from __future__ import annotations

import math

import pytest
import torch

from deeplab.metrics import ConfusionMatrix

IGNORE = 255


def test_hand_computed_example() -> None:
    # classes 0, 1, 2, 3; class 3 appears nowhere (NaN, not in the mean); class 2 is never predicted (IoU 0)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, 0]])
    prediction = torch.tensor([[0, 1, 1, 1], [1, 0, 0, 0]])
    cm = ConfusionMatrix(4, IGNORE)
    cm.update(target, prediction)
    # 7 pixels kept (one ignored); rows are the true class, columns the predicted one
    expected = torch.tensor([[2, 1, 0, 0], [0, 2, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.matrix, expected)
    iou = cm.iou()
    assert iou[0].item() == pytest.approx(2 / (3 + 3 - 2))  # TP 2, row 3, column 3
    assert iou[1].item() == pytest.approx(2 / (2 + 4 - 2))
    assert iou[2].item() == 0.0
    assert math.isnan(iou[3].item())
    assert cm.miou == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert cm.pixel_accuracy == pytest.approx(4 / 7)
    assert cm.mean_class_accuracy == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_dataset_level_not_mean_of_images() -> None:
    """Two images: accumulating pixels gives a different (correct) answer than averaging per-image mIoU."""
    cm = ConfusionMatrix(2, IGNORE)
    cm.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]))  # per image: IoU0 .75, IoU1 0
    cm.update(torch.tensor([1, 1]), torch.tensor([1, 1]))             # per image: IoU1 1 (class 0 absent)
    assert cm.iou().tolist() == pytest.approx([3 / 4, 2 / 3])


def test_predicted_but_absent_class_counts_zero() -> None:
    cm = ConfusionMatrix(3, IGNORE)
    cm.update(torch.tensor([0, 0]), torch.tensor([0, 2]))
    assert cm.iou()[2].item() == 0.0 and math.isnan(cm.iou()[1].item())


def test_order_and_batching_do_not_matter() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (6, 7, 9), generator=generator)
    targets[targets == 4] = IGNORE
    predictions = torch.randint(0, 4, (6, 7, 9), generator=generator)
    whole = ConfusionMatrix(4, IGNORE)
    whole.update(targets, predictions)
    single = ConfusionMatrix(4, IGNORE)
    for i in reversed(range(6)):
        single.update(targets[i], predictions[i])
    assert torch.equal(whole.matrix, single.matrix)


def test_out_of_range_label_is_an_error_naming_the_source() -> None:
    cm = ConfusionMatrix(3, IGNORE)
    with pytest.raises(ValueError, match=r"img_7.png: label values \[3\] are outside 0..2"):
        cm.update(torch.tensor([0, 3, IGNORE]), torch.tensor([0, 0, 0]), source="img_7.png")


def test_summary_and_table() -> None:
    cm = ConfusionMatrix(2, IGNORE)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    summary = cm.summary(["bg", "cat"])
    assert summary["per_class"]["cat"]["iou"] == 0.0 and summary["pixels"] == 2
    assert "cat" in cm.table(["bg", "cat"]) and "25.00" in cm.table(["bg", "cat"])
