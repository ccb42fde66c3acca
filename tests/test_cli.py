"""The command line: the models table, one-line errors, and the README/CI contract."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from deeplab.cli import main
from deeplab.models import deeplabv3, list_models
from deeplab.models.complexity import count_parameters


def test_models_table_lists_every_model_with_costs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--format", "csv", "--size", "257"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {row[0]: row for row in csv.reader(lines[1:])}
    assert rows["model"] == ["model", "parameters", "GFLOPs OS8", "GFLOPs OS16", "GFLOPs OS32"]
    assert set(list_models()) <= set(rows)
    assert "deeplabv3_mobilenet_v2 (width 0.5)" in rows
    gflops = [float(v) for v in rows["deeplabv3_resnet101"][2:5]]
    assert gflops[0] > gflops[1] > gflops[2] > 0  # OS8 > OS16 > OS32
    with torch.device("meta"):
        expected = count_parameters(deeplabv3(backbone="resnet50"))
    assert int(rows["deeplabv3_resnet50"][1].replace(",", "")) == expected


def test_bad_argument_is_one_line_and_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "deeplab", "models", "--size", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "must be a positive integer" in result.stderr and "Traceback" not in result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run must run exactly the README's test command (the second command of the README)."""
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_command = next(line.strip() for line in readme.splitlines() if "pytest" in line and "venv" in line)
    assert test_command in ci
