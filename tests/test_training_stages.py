"""The paper's two-stage recipe in miniature: evaluation at another output stride during training, and stage 2
(OS8, frozen BN, lower lr) started from stage 1, also as a fine-tune to another dataset's classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import bn_state, make_config, state_dict_of
from deeplab.training import runner
from deeplab.weights.modelfile import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_evaluation_at_another_output_stride(mini_camvid: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """train.eval_output_stride (train at OS16, evaluate at OS8); training and checkpoints stay at OS16."""
    seen = []
    real_evaluate = runner.evaluate

    def spy(predictor, *args, **kwargs):  # the stride every validation forward pass runs at
        hook = predictor.model.register_forward_pre_hook(lambda model, _: seen.append(model.output_stride))
        try:
            return real_evaluate(predictor, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(runner, "evaluate", spy)
    config = make_config(mini_camvid, tmp_path, "data.max_train_images=2", "train.iterations=2",
                         "train.eval_every=1", "train.eval_output_stride=8")
    runner.run_training(config, resume=None, progress=False, check_data=False)
    assert seen == [8, 8]  # one forward pass (3 validation images in one batch) per evaluation
    model, _ = load_model(config.run_dir / "checkpoint_0000002.pt")
    assert model.output_stride == 16 and model.config["output_stride"] == 16


def test_second_stage_starts_from_the_first_at_os8_with_frozen_bn(mini_camvid: Path, shared_data: Path,
                                                                  tmp_path: Path) -> None:
    """The paper's two stages (configs/voc_resnet101_os8_finetune.yaml in miniature): stage 2 loads stage 1
    through model.init_weights, runs at OS8 with BN frozen — its BN statistics and affine parameters stay
    bit-identical to stage 1's while the convolutions train. Then the same start with finetune=true on
    another dataset (real VOC images, 21 classes instead of CamVid's 11) re-initialises only the classifier."""
    stage1 = make_config(mini_camvid, tmp_path, "data.max_train_images=4", "train.iterations=2", name="stage1")
    runner.run_training(stage1, resume=None, progress=False, check_data=False)
    start = stage1.run_dir / "checkpoint_0000002.pt"
    second = ["data.max_train_images=4", "train.iterations=2", "train.freeze_bn=true", "train.lr=0.001",
              f"model.init_weights={start}"]
    stage2 = make_config(mini_camvid, tmp_path, *second, "model.output_stride=8", name="stage2")
    runner.run_training(stage2, resume=None, progress=False, check_data=False)

    model, _ = load_model(stage2.run_dir / "checkpoint_0000002.pt")
    assert model.output_stride == 8 and model.backbone.output_stride == 8
    before, after = state_dict_of(start), state_dict_of(stage2.run_dir / "checkpoint_0000002.pt")
    stage1_bn, frozen = bn_state(load_model(start)[0]), bn_state(model)
    assert len(frozen) > 50 and frozen.keys() == stage1_bn.keys()
    assert all(torch.equal(v, stage1_bn[k]) for k, v in frozen.items())
    assert not torch.equal(after["backbone.features.0.0.weight"], before["backbone.features.0.0.weight"])

    voc = [f"data.root={shared_data / 'voc2012_val_dev'}", "data.train_split=val_dev.txt", "data.max_val_images=1",
           "data.val_split=val_dev.txt", "model.finetune=true"]
    transfer = make_config(mini_camvid, tmp_path, *second, *voc, "data.dataset=voc", name="transfer")
    runner.run_training(transfer, resume=None, progress=False, check_data=False)
    moved = state_dict_of(transfer.run_dir / "checkpoint_0000002.pt")
    classifier = [k for k in moved if moved[k].shape != before[k].shape]
    assert classifier and all(moved[k].shape[0] == 21 and before[k].shape[0] == 11 for k in classifier)
    transferred_bn = bn_state(load_model(transfer.run_dir / "checkpoint_0000002.pt")[0])
    assert all(torch.equal(v, stage1_bn[k]) for k, v in transferred_bn.items())  # loaded, then frozen
