"""Experiment configuration: typed dataclasses with defaults in code, one flat YAML per experiment (no
inheritance), dotted overrides on the command line (``--set train.lr=0.01``).

Unknown keys and wrong types fail with the list of valid keys; the resolved config is saved next to the run.
Model code never imports this module: ``model_kwargs(config)`` turns the config into builder arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .data.normalization import IMAGENET
from .models.registry import BUILDERS
from .utils.files import atomic_write_bytes
from .utils.plain import plain


@dataclass
class ModelConfig:
    """Every builder argument (``deeplab.models.deeplabv3`` / ``deeplabv3plus``) but ``num_classes``, which the
    dataset gives. ``None`` means "the builder's default" and is not passed; a value the chosen ``arch`` does
    not take is refused (``model_kwargs``). The last three say where the weights start from."""

    arch: str = "deeplabv3"                  # deeplabv1 | deeplabv2 | deeplabv3 | deeplabv3plus
    backbone: str = "resnet101"
    output_stride: int | None = None         # None: the architecture's (16 for V3/V3+, 8 for v1/v2)
    multi_grid: tuple[int, ...] | None = None  # None: the backbone's default (ResNet (1, 2, 4))
    extra_blocks: int | None = None          # deeplabv3: cascaded block5..7 (ResNet)
    aspp: bool | None = None                 # deeplabv3: False is the cascaded model's plain classifier
    aspp_rates: tuple[int, ...] | None = None  # None: derived from the output stride; []: mobile ASPP
    aspp_channels: int | None = None         # None: 256 (V3/V3+), 1024 (v1/v2 fc6/fc7)
    image_pooling: bool | None = None        # V3/V3+: the image-level ASPP branch (default on)
    separable_aspp: bool | None = None
    aspp_dropout: float | None = None        # None: 0.1 (V3/V3+), 0.5 (v1/v2)
    head_conv: bool | None = None            # deeplabv3: torchvision's extra 3x3 conv
    aux_loss: bool = False
    width_mult: float = 1.0
    channel_divisor: int = 8
    first_unit_previous_dilation: bool | None = None  # deeplabv3: torchvision's dilation convention
    align_corners: bool = False
    low_level_reduced: int | None = None     # deeplabv3plus: decoder
    decoder_channels: int | None = None
    separable_decoder: bool | None = None
    backbone_weights: str | None = None      # ImageNet weights file for the backbone
    init_weights: str | None = None          # a deeplab model file / checkpoint to start from
    finetune: bool = False                   # with init_weights: load all but the class layers


WEIGHT_SOURCES = ("backbone_weights", "init_weights", "finetune")  # ModelConfig fields that are not builder arguments


@dataclass
class DataConfig:
    dataset: str = "voc"                     # voc | camvid | cityscapes | folder
    root: str = ""
    train_split: str | None = None           # None: the dataset's train split (folder: every matched pair);
                                             # train+val: the union of the named splits
    val_split: str | None = None             # None: the dataset's val split (folder: val_fraction of the pairs)
    val_fraction: float = 0.1                # folder dataset without a val split: held out, seeded by train.seed
    ignore_index: int | None = None          # None: the dataset's (255)
    label_map: dict[int, int] | None = None  # stored mask value → training label, e.g. {255: 1} for 0/255 masks
    images: str = ""                         # folder layout only
    masks: str = ""
    crop_size: tuple[int, int] = (513, 513)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    jitter: bool = False
    rotate_degrees: float = 0.0              # > 0: random rotation by up to this many degrees either way
    mean: tuple[float, float, float] = IMAGENET.mean
    std: tuple[float, float, float] = IMAGENET.std
    workers: int = 2
    skip_bad: bool = False
    classes: tuple[str, ...] = ()            # folder layout only
    max_train_images: int | None = None      # a subset for smoke runs
    max_val_images: int | None = None
    bootstrap_classes: tuple[str, ...] = ()  # images with any of these classes are repeated ...
    bootstrap_factor: int = 1                # ... this many times per epoch (the paper's VOC test recipe)
    holdout_groups: tuple[str, ...] = ()     # validate on these groups of the training split, train on the rest
    group_pattern: str | None = None         # regex, first group = the group of an image's stem (default: the
                                             # dataset's, e.g. CamVid's drive)


@dataclass
class TrainConfig:
    iterations: int = 30000
    batch_size: int = 16
    lr: float = 0.007
    momentum: float = 0.9
    weight_decay: float = 1e-4
    classifier_lr_mult: float = 1.0          # the head's lr × this (DeepLab v1/v2: 10 for the new classifier)
    poly_power: float = 0.9
    warmup_iterations: int = 0
    bn_momentum: float = 0.0003              # PyTorch momentum = 1 - the paper's decay 0.9997
    freeze_bn: bool = False                  # the paper's second stage (OS8 fine-tune)
    class_weights: str | tuple[float, ...] | None = None  # None | "median" | explicit weights
    class_weight_cap: float | None = None    # with "median": clip the weights to [1/cap, cap]
    aux_weight: float = 0.4
    top_k_pixels: float = 1.0                # hard-pixel mining: only the hardest share of each batch's pixels
    top_k_ramp_iterations: int = 0           # ... reached linearly from 1 over these steps (losses.py)
    precision: str = "auto"                  # auto (fp16 AMP on CUDA, fp32 on CPU) | fp32 | bf16 (fp32 on CPUs without AVX512-BF16/AMX) | fp16 (CUDA)
    channels_last: bool = False              # NHWC activations: faster convolutions on CPU and tensor cores
    activation_checkpointing: bool = False   # backbone blocks recomputed in backward: less memory, same gradients
    sync_bn: bool = True                     # under DDP on CUDA
    grad_accumulation: int = 1
    ema_decay: float | None = None           # validate and save an average of the weights (e.g. 0.999): training/ema.py
    eval_every: int = 1000
    eval_output_stride: int | None = None
    checkpoint_every: int = 1000
    keep_last: int = 3
    time_budget_minutes: float | None = None  # stop (and evaluate) when the wall-clock budget is spent
    stop_after: int | None = None            # stop after this many steps of this invocation, as if killed
                                             # (no final eval/save; the schedule still uses iterations)
    seed: int = 0
    log_every: int = 20
    resume_changes: str = "refuse"           # refuse | warn: resuming with other settings than the checkpoint's
    dist_timeout_s: float = 600.0            # a collective waiting this long for a peer fails the job


@dataclass
class Config:
    name: str = "experiment"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message lists the valid keys."""


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults ← the YAML file ← ``key=value`` overrides (dotted keys, YAML-typed values)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {error.start})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(text) if text.strip() else None)
    return _build(Config, data, str(path) if path else "config")


def config_to_dict(config: Config) -> dict[str, Any]:
    return plain(dataclasses.asdict(config))


def save_config(config: Config, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())


def model_kwargs(model: ModelConfig, num_classes: int) -> dict[str, Any]:
    """Builder arguments for ``deeplab.models.build_model`` (the one bridge from config to model code): every
    field that is set, checked against what the ``arch``'s builder takes."""
    if model.arch not in BUILDERS:
        raise ConfigError(f"model.arch: {model.arch!r} is not an architecture; valid: {', '.join(BUILDERS)}")
    accepted = inspect.signature(BUILDERS[model.arch]).parameters
    kwargs: dict[str, Any] = {"arch": model.arch, "num_classes": num_classes}
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if f.name in WEIGHT_SOURCES or f.name == "arch" or value is None:
            continue
        if f.name not in accepted:
            raise ConfigError(f"model.{f.name}={value!r} does not apply to {model.arch} (leave it unset)")
        kwargs[f.name] = value
    return kwargs


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} in "
                          f"{cls.__name__}; valid keys: {', '.join(fields)}")
    values = {}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name!r} must be a section (mapping), got {value!r}")
            values[name] = _build(hint, value, f"{where}: {name}")
        else:
            values[name] = _coerce(value, hint, f"{where}: {cls.__name__.removesuffix('Config').lower()}.{name}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field's type; lists become tuples; ints are accepted for floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(hint)}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {value!r} is not a list ({_type_name(hint)})")
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{where}: expected {len(item_types)} values, got {value!r}")
        return tuple(_coerce(v, t, where) for v, t in zip(value, item_types))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {value!r} is not a mapping ({_type_name(hint)})")
        key_type, value_type = args
        return {_coerce(k, key_type, where): _coerce(v, value_type, where) for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
