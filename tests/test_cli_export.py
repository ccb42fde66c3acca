"""``deeplab export``: exports and checks parity, refuses to overwrite without ``--force``, reports bad files and
missing extras in one line, and takes the normalisation from the model file unless told otherwise."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import randomise_bn_stats
from deeplab import cli
from deeplab.cli import export as export_command
from deeplab.data.normalization import Normalization
from deeplab.inference.backends import OnnxRuntimeModel
from deeplab.models import DeepLab, deeplabv3
from deeplab.weights.card import ModelCard
from deeplab.weights.modelfile import save_model

HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs the export extras: pip install 'deeplab[export]'")


@pytest.fixture(scope="module")
def mobile() -> DeepLab:
    torch.manual_seed(1)
    return randomise_bn_stats(deeplabv3(backbone="mobilenet_v2", width_mult=0.5, num_classes=5), seed=0)


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch):
    """``deeplab.cli.main``, with the export subcommand registered."""
    assert export_command in cli.SUBCOMMANDS
    return cli.main


@pytest.fixture(scope="module")
def model_file(mobile: DeepLab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    card = ModelCard(mobile.config, [f"c{i}" for i in range(5)], Normalization((0.5,) * 3, (0.5,) * 3))
    return save_model(mobile, tmp_path_factory.mktemp("weights") / "mobile.safetensors", card)


@needs_onnx
def test_cli_exports_and_checks_parity(main, model_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out dir" / "model.onnx"  # a space, and a folder that does not exist yet
    assert main(["export", "--weights", str(model_file), "--format", "onnx", "--output", str(output),
                 "--include-preprocessing"]) == 0
    printed = capsys.readouterr().out
    assert "ONNX opset 17" in printed and "labels out" in printed and printed.rstrip().endswith("ok")
    header = OnnxRuntimeModel(output).header
    assert header["normalization"]["mean"] == [0.5, 0.5, 0.5] and header["classes"][0] == "c0"
    assert main(["export", "--model", "deeplabv3_mobilenet_v2", "--num-classes", "3", "--format", "onnx",
                 "--output", str(output.with_name("untrained.onnx"))]) == 0
    assert "untrained deeplabv3_mobilenet_v2" in capsys.readouterr().out


def test_cli_refuses_to_overwrite_without_force(main, model_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "model.pt"
    output.write_bytes(b"keep me")
    args = ["export", "--weights", str(model_file), "--format", "torchscript", "--output", str(output)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(output) in err and "--force" in err
    assert output.read_bytes() == b"keep me"
    assert main([*args, "--force"]) == 0
    assert output.read_bytes() != b"keep me"
    assert "TorchScript" in capsys.readouterr().out


def test_cli_unreadable_weights_is_one_line_naming_the_file(main, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken weights.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    assert main(["export", "--weights", str(bad), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()
    assert main(["export", "--weights", str(tmp_path / "missing.pt"), "--format", "onnx",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert "missing.pt" in capsys.readouterr().err


@needs_onnx
def test_cli_mean_and_std_replace_the_files_normalisation(main, model_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "--weights", str(model_file), "--format", "onnx", "--output", str(tmp_path / "m.onnx"),
            "--include-preprocessing"]
    assert main([*args, "--mean", "0.4", "0.4", "0.4"]) == 2
    assert "both --mean and --std" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    assert main([*args, "--mean", "0.4", "0.4", "0.4", "--std", "0.3", "0.3", "0.3"]) == 0
    header = OnnxRuntimeModel(tmp_path / "m.onnx").header
    assert header["normalization"]["mean"] == [0.4] * 3 and header["normalization"]["std"] == [0.3] * 3


def test_cli_parser_standalone() -> None:
    """The subcommand plugs into any argparse parser (as cli/__init__ will register it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="deeplab")
    export_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", "--model", "deeplabv3_resnet18", "--format", "onnx", "--output", "x.onnx"])
    assert args.run is export_command.run and args.opset is None and not args.force
    result = subprocess.run([sys.executable, "-c", "import argparse; from deeplab.cli import export as e; "
                             "p = argparse.ArgumentParser(); e.add_parser(p.add_subparsers()); "
                             "p.parse_args(['export', '--format', 'onnx', '--output', 'x'])"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--weights" in result.stderr  # one of --weights/--model is required


def test_cli_without_onnx_installed_is_one_line(main, model_file: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the export extras were not installed
    assert main(["export", "--weights", str(model_file), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnx is not installed" in err and "deeplab[export]" in err
