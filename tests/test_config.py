"""Config: defaults in code, flat YAML per experiment, dotted overrides, clear errors, saved and reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from deeplab.config import Config, ConfigError, load_config, model_kwargs, save_config


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("name: camvid\nmodel:\n  backbone: mobilenet_v2\n  aspp_rates: []\ndata:\n  crop_size: [360, 480]\n")
    config = load_config(path, ["train.lr=0.01", "train.class_weights=median", "model.output_stride=8"])
    assert config.name == "camvid" and config.model.backbone == "mobilenet_v2"
    assert config.model.aspp_rates == () and config.data.crop_size == (360, 480)
    assert config.train.lr == 0.01 and config.train.class_weights == "median" and config.model.output_stride == 8
    assert config.train.momentum == 0.9  # untouched default


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", r"unknown key\(s\) 'lrr' in TrainConfig; valid keys: iterations, batch_size, lr"),
    ("trainer.lr=1", r"unknown key\(s\) 'trainer' in Config; valid keys: name, output_dir, model, data, train"),
    ("train.lr=abc", r"train.lr: .abc. is not a valid float"),
    ("train.lr=1e-", r"not a valid float"),
    ("model.output_stride=1.5", r"model.output_stride: 1.5 is not a valid int"),
    ("data.crop_size=[1]", r"expected 2 values"),
    ("train.freeze_bn=maybe", r"not a valid bool"),
    ("train.lr", r"must look like section.key=value"),
])
def test_bad_overrides_fail_with_valid_keys(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)


def test_resolved_config_round_trip(tmp_path: Path) -> None:
    config = load_config(None, ["model.backbone=resnet50", "train.class_weights=[1.0, 2.0]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_model_kwargs_build_a_model() -> None:
    from deeplab.models import build_model

    config = Config()
    config.model.backbone, config.model.width_mult, config.model.aspp_rates = "mobilenet_v2", 0.5, ()
    model = build_model(model_kwargs(config.model, 11))
    assert model.aspp_rates == () and model.classifier[-1].out_channels == 11


def test_model_config_covers_every_builder_argument() -> None:
    """Every builder argument but num_classes (the dataset gives it) is a ModelConfig field and nothing else is,
    and a field's default is either None (the builder's own default) or each builder's default."""
    import dataclasses
    import inspect

    from deeplab.config import WEIGHT_SOURCES, ModelConfig
    from deeplab.models.registry import BUILDERS

    signatures = {arch: inspect.signature(build).parameters for arch, build in BUILDERS.items()}
    arguments = {name for params in signatures.values() for name in params} - {"num_classes"}
    fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    assert set(fields) - set(WEIGHT_SOURCES) - {"arch"} == arguments
    for name in arguments - {"backbone"}:  # the backbone default differs by architecture on purpose
        if fields[name] is not None:
            for arch, params in signatures.items():
                if name in params:
                    assert params[name].default == fields[name], (arch, name)


def test_model_kwargs_refuse_what_the_architecture_does_not_take() -> None:
    config = load_config(None, ["model.arch=deeplabv3plus", "model.extra_blocks=1"])
    with pytest.raises(ConfigError, match=r"model.extra_blocks=1 does not apply to deeplabv3plus"):
        model_kwargs(config.model, 11)
    config = load_config(None, ["model.decoder_channels=128"])
    with pytest.raises(ConfigError, match=r"model.decoder_channels=128 does not apply to deeplabv3 "):
        model_kwargs(config.model, 11)
    config = load_config(None, ["model.arch=deeplabv3plus", "model.backbone=resnet18", "model.decoder_channels=64",
                                "model.channel_divisor=8"])
    from deeplab.models import build_model

    model = build_model(model_kwargs(config.model, 5))
    assert model.config["decoder_channels"] == 64 and model.classifier.classifier.in_channels == 64


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    load_config(path)


def test_scientific_notation_without_a_dot() -> None:
    """YAML 1.1 reads 1e-4 as a string; float fields accept it anyway."""
    assert load_config(None, ["train.lr=1e-4", "train.weight_decay=4e-5"]).train.lr == 1e-4


@pytest.mark.parametrize("name, stride, rates, block4, crop, batch, lr, iterations, freeze_bn, train_split", [
    # The paper's recipe: stage 1 on trainaug at OS16 with BN trained; stage 2 frozen BN at OS8, lr 0.001, on train.
    ("voc_resnet101_os16", 16, (6, 12, 18), [2, 4, 8], (513, 513), 16, 0.007, 30000, False, "trainaug"),
    ("voc_resnet101_os8_finetune", 8, (12, 24, 36), [4, 8, 16], (513, 513), 16, 0.001, 30000, True, "train"),
    ("cityscapes_resnet101_os16", 16, (6, 12, 18), [2, 4, 8], (769, 769), 8, 0.01, 90000, False, "train"),
])
def test_paper_recipe_configs(name: str, stride: int, rates: tuple[int, ...], block4: list[int],
                              crop: tuple[int, int], batch: int, lr: float, iterations: int, freeze_bn: bool,
                              train_split: str) -> None:
    """The shipped recipes carry the paper's numbers and build the paper's geometry: ResNet-101, Multi-Grid
    (1, 2, 4) applied as block-4 dilations, ASPP rates from the output stride, image pooling."""
    import torch

    from deeplab.models.registry import build_model
    from test_models import applied_dilations

    config = load_config(REPO / "configs" / f"{name}.yaml")
    train = config.train
    assert (config.data.crop_size, config.data.scale_range, train.batch_size, train.lr, train.iterations) == \
        (crop, (0.5, 2.0), batch, lr, iterations)
    assert (train.momentum, train.weight_decay, train.poly_power, train.freeze_bn) == (0.9, 1e-4, 0.9, freeze_bn)
    assert train.bn_momentum == pytest.approx(1 - 0.9997) and config.data.train_split == train_split
    assert (config.model.init_weights is not None) == freeze_bn  # stage 2 starts from stage 1
    with torch.device("meta"):
        model = build_model(model_kwargs(config.model, 19 if "cityscapes" in name else 21)).eval()
    assert model.output_stride == stride and model.aspp_rates == rates and config.model.image_pooling
    seen = applied_dilations(model, torch.empty(1, 3, 65, 65, device="meta"))
    assert [seen[f"backbone.layer4.{i}.conv2"][0] for i in range(3)] == block4
    assert len([k for k in seen if k.startswith("backbone.layer3.")]) == 23  # ResNet-101: 23 block-3 units
