"""Data parallelism on CPU: gradient accumulation equals one batch, and two torchrun (gloo) processes equal one
process — weights, losses and the evaluation's confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_config, state_dict_of, step_losses, train_cli
from deeplab.config import save_config
from deeplab.data.datasets import CAMVID_CLASSES
from deeplab.training import runner, splits
from deeplab.weights.modelfile import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


SAME_GRADIENT_RUN = ["train.freeze_bn=true", "model.aspp_dropout=0.0", "data.max_train_images=4",
                     "train.class_weights=[0.3, 0.2, 4.8, 0.15, 1.0, 0.4, 3.8, 2.0, 0.8, 6.4, 8.9]"]


def test_gradient_accumulation_matches_one_batch(mini_camvid: Path, tmp_path: Path) -> None:
    """Batch 1 × 2 accumulated micro-batches vs batch 2: the same samples per step (void pixels and class
    weights make the two crops count different totals), BN frozen, no dropout → the same weights and losses."""
    whole = make_config(mini_camvid, tmp_path, *SAME_GRADIENT_RUN, "train.iterations=4", name="whole")
    split = make_config(mini_camvid, tmp_path, *SAME_GRADIENT_RUN, "train.iterations=4", "train.batch_size=1",
                        "train.grad_accumulation=2", name="split")
    for config in (whole, split):
        runner.run_training(config, resume=None, progress=False, check_data=False)
    whole_state = state_dict_of(whole.run_dir / "checkpoint_0000004.pt")
    split_state = state_dict_of(split.run_dir / "checkpoint_0000004.pt")
    for key in whole_state:
        torch.testing.assert_close(split_state[key], whole_state[key], atol=1e-5, rtol=0, msg=key)
    np.testing.assert_allclose([v for _, v in step_losses(split.run_dir)],
                               [v for _, v in step_losses(whole.run_dir)], rtol=1e-5)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(mini_camvid: Path, tmp_path: Path) -> None:
    """torchrun, 2 ranks × 1 image vs 1 process × 2 images, same seed: the same samples in every step, BN frozen
    and no dropout (both would depend on the per-process batch), so the gradients agree up to float rounding —
    with CamVid's void pixels and class weights, so the two crops of a step count different weighted pixel
    totals (the loss normaliser is summed across ranks). Evaluation on 3 validation images (odd: rank 0 gets 2,
    rank 1 gets 1) gives the one-process matrix."""
    common = [*SAME_GRADIENT_RUN, "train.iterations=4", "train.eval_every=4", "train.checkpoint_every=2",
              "train.time_budget_minutes=60"]  # the budget: a collective every step
    single = make_config(mini_camvid, tmp_path, *common, name="single")
    runner.run_training(single, resume=None, progress=False, check_data=False)

    ddp = make_config(mini_camvid, tmp_path, *common, "train.batch_size=1", name="ddp")
    config_file = tmp_path / "ddp.yaml"
    save_config(ddp, config_file)
    result = train_cli(config_file, "--no-check", cwd=tmp_path, torchrun=2)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])

    # Only rank 0 writes and reports.
    names = {p.name for p in ddp.run_dir.iterdir()} - {"tensorboard"}
    assert names == {"config.yaml", "metrics.csv", "curves.png", "confusion_matrix.png", "eval.json", "result.json",
                     "best.pt", "checkpoint_0000002.pt", "checkpoint_0000004.pt"}
    assert result.stdout.count('"iteration": 4') == 1 and result.stdout.count("step 4: val mIoU") == 1

    single_state = state_dict_of(single.run_dir / "checkpoint_0000004.pt")
    ddp_state = state_dict_of(ddp.run_dir / "checkpoint_0000004.pt")
    assert single_state.keys() == ddp_state.keys()
    for key in single_state:
        torch.testing.assert_close(ddp_state[key], single_state[key], atol=1e-5, rtol=0, msg=key)
    moved = state_dict_of(single.run_dir / "checkpoint_0000002.pt")
    assert any(not torch.equal(moved[k], single_state[k]) for k in moved)  # training did change the weights
    single_losses, ddp_losses = step_losses(single.run_dir), step_losses(ddp.run_dir)
    assert [s for s, _ in ddp_losses] == [1, 2, 3, 4]  # the loss averaged over ranks, as one process logs it
    np.testing.assert_allclose([v for _, v in ddp_losses], [v for _, v in single_losses], rtol=1e-5)

    single_eval = json.loads((single.run_dir / "eval.json").read_text())
    ddp_eval = json.loads((ddp.run_dir / "eval.json").read_text())
    assert 0 < ddp_eval["pixels"] == single_eval["pixels"] < 3 * 72 * 96  # void pixels are not counted
    assert ddp_eval["confusion_matrix"] == single_eval["confusion_matrix"]
    # Exactly: the DDP model evaluated in one process gives the matrix the two ranks summed.
    from deeplab.inference import Predictor, evaluate

    model, card = load_model(ddp.run_dir / "checkpoint_0000004.pt")
    val_set = splits.make_dataset(ddp, "val", None)
    assert card.num_classes == len(CAMVID_CLASSES)
    matrix = evaluate(Predictor(model, normalization=card.normalization, batch_size=1), val_set).matrix
    assert matrix.matrix.tolist() == ddp_eval["confusion_matrix"]
