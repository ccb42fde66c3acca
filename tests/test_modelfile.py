"""Our own model files: save → load rebuilds the model from the file alone (bit-identical logits, the same card),
the build config is what is recorded, other class counts need fine-tuning, failed saves keep the old file,
checksums refuse changed bytes, and ``load_any`` reads every kind of file once."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_one_line_naming, message_of, randomise_bn_stats
from deeplab.data.normalization import IMAGENET
from deeplab.models.builders import deeplabv3, deeplabv3plus
from deeplab.weights import WeightsError
from deeplab.weights.card import ModelCard
from deeplab.weights.modelfile import load_model, save_model



def small_models():
    return {
        "v3_resnet18": lambda: deeplabv3(backbone="resnet18", num_classes=5),
        "v3plus_mobilenet": lambda: deeplabv3plus(backbone="mobilenet_v2", width_mult=0.5, num_classes=3),
    }


def eval_logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 49, 67, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("name", ["v3_resnet18", "v3plus_mobilenet"])
def test_save_load_roundtrip_is_bit_identical(tmp_path, name, suffix):
    """save_model → load_model rebuilds the model from the file alone: identical logits, same metadata."""
    torch.manual_seed(0)
    model = small_models()[name]()
    randomise_bn_stats(model, seed=1)
    metadata = ModelCard(model.config, [f"class_{i}" for i in range(model.config["num_classes"])], IMAGENET,
                         palette=[(i, 2 * i, 3 * i) for i in range(model.config["num_classes"])], ignore_index=255,
                         dataset="mine")
    path = save_model(model, tmp_path / f"model{suffix}", metadata)
    torch.manual_seed(123)  # a different init: only the file can make the logits equal
    loaded, meta = load_model(path)
    assert meta == metadata
    assert loaded.config == model.config
    assert torch.equal(eval_logits(loaded), eval_logits(model))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_switched_output_stride_is_not_saved_as_the_build_config(tmp_path, suffix):
    """A model switched to OS8 (e.g. for evaluation) saves the config it was built (and trained) with, OS16;
    the file's model switched to OS8 computes what the switched model did: stride, rates, dilations, logits."""
    torch.manual_seed(0)
    model = deeplabv3(backbone="resnet18", num_classes=5)
    randomise_bn_stats(model, seed=2)
    model.set_output_stride(8)
    path = save_model(model, tmp_path / f"os8{suffix}")
    loaded, card = load_model(path)
    assert loaded.output_stride == 16 and card.config["output_stride"] == 16 and card.config["aspp_rates"] == [6, 12, 18]
    with loaded.at_output_stride(8):
        assert loaded.aspp_rates == model.aspp_rates == (12, 24, 36)
        assert loaded.backbone.unit_dilations == model.backbone.unit_dilations
        assert torch.equal(eval_logits(loaded), eval_logits(model))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("name", ["v3_resnet18", "v3plus_mobilenet"])
def test_load_model_with_other_class_count(tmp_path, name, suffix):
    """Another ``num_classes`` fails without ``finetune``; with it, all but the class layer is loaded."""
    model = small_models()[name]()
    path = save_model(model, tmp_path / f"model{suffix}")
    with pytest.raises(WeightsError) as error:
        load_model(path, num_classes=7)
    assert_one_line_naming(error, path)
    assert "finetune" in message_of(error)
    loaded, _ = load_model(path, num_classes=7, finetune=True)
    original, new = model.state_dict(), loaded.state_dict()
    changed = {k for k in original if original[k].shape != new[k].shape}
    assert changed and all(k.startswith("classifier.") for k in changed)
    for key in set(original) - changed:
        assert torch.equal(new[key], original[key]), key
    assert eval_logits(loaded).shape[1] == 7


def test_failed_save_leaves_previous_file_untouched(tmp_path, monkeypatch):
    """A save that dies halfway leaves the previous file byte for byte and no temporary file behind."""
    path = save_model(deeplabv3(backbone="resnet18", num_classes=5), tmp_path / "model.pt")
    before = path.read_bytes()
    real_save = torch.save

    def dies_midway(obj, handle, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, handle)  # some bytes reach the file first
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        save_model(deeplabv3(backbone="resnet18", num_classes=9), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    monkeypatch.undo()
    assert load_model(path)[0].config["num_classes"] == 5


def _flip(path, count: int = 64, at: float = 0.5) -> None:
    """Flip ``count`` bytes in the middle of a file — inside the tensor data of any model this size."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_changed_bytes_are_refused_by_the_checksum(tmp_path, suffix):
    """64 flipped bytes inside a tensor still deserialise (torch's zip reader and safetensors do not check the
    data) — the payload digest in the header is what refuses them, in one line naming the file."""
    model = deeplabv3(backbone="resnet18", num_classes=5)
    path = save_model(model, tmp_path / f"model{suffix}")
    _flip(path)
    with pytest.raises(WeightsError) as error:
        load_model(path)
    assert_one_line_naming(error, path)
    assert "checksum" in message_of(error)


def test_load_any_reads_a_file_once(tmp_path, monkeypatch):
    from deeplab.inference.loading import load_any

    model = deeplabv3(backbone="resnet18", num_classes=5)
    path = save_model(model, tmp_path / "model.pt")
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a[0]) or real_load(*a, **k))
    loaded = load_any(path)
    assert len(calls) == 1 and loaded.kind == "deeplab" and loaded.card.num_classes == 5


def test_predictor_from_file_takes_every_kind_the_command_line_takes(tmp_path, tflite_file, photos):
    """deeplab .pt / .safetensors, a checkpoint, a torchvision state dict, .tflite and .onnx: the Python API
    accepts what ``-w`` accepts, with the file's own normalisation and class names."""
    from deeplab.data.io import read_image
    from deeplab.data.normalization import SIGNED_UNIT
    from deeplab.export import export_onnx
    from deeplab.inference import Predictor
    from deeplab.weights.modelfile import write_model_file
    from deeplab.weights.torchvision import torchvision_deeplabv3_config

    image = read_image(photos / "café photo.jpg")
    tflite = Predictor.from_file(tflite_file)
    assert tflite.normalization == SIGNED_UNIT and tflite.class_names[15] == "person"
    expected = tflite.predict([image])[0].labels
    converted = tflite.model
    card = ModelCard.default(converted.config, normalization=SIGNED_UNIT)
    files = {"pt": save_model(converted, tmp_path / "m.pt", card),
             "safetensors": save_model(converted, tmp_path / "m.safetensors", card),
             "checkpoint": write_model_file(tmp_path / "c.pt", converted, card, training={"iteration": 3})}
    pytest.importorskip("onnxruntime")
    files["onnx"] = export_onnx(converted, tmp_path / "m.onnx", card=card)
    for kind, path in files.items():
        predictor = Predictor.from_file(path)
        assert predictor.normalization == SIGNED_UNIT and predictor.class_names == tflite.class_names, kind
        labels = predictor.predict([image])[0].labels
        assert (labels == expected).mean() > (0.999 if kind == "onnx" else 1 - 1e-9), kind
    torch.manual_seed(0)
    torchvision = deeplabv3(**torchvision_deeplabv3_config(50))
    torch.save(torchvision.state_dict(), tmp_path / "tv.pth")
    predictor = Predictor.from_file(tmp_path / "tv.pth")
    assert predictor.normalization == IMAGENET and predictor.class_names[0] == "background"
    assert predictor.model.config == torchvision.config
