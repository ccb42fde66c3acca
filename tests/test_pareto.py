"""Accuracy against time (``deeplab benchmark --pareto``): the Pareto front's known answers, and the whole
table on the authors' model and real VOC labels — its mIoU cross-checked against ``evaluate`` on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from deeplab.benchmark.pareto import Strategy, default_strategies, pareto_front
from deeplab.cli import main
from deeplab.data.datasets import build_dataset
from deeplab.inference import Predictor
from deeplab.inference.evaluation import evaluate
from deeplab.inference.tta import PAPER_SCALES


def test_pareto_front_known_answers() -> None:
    #        fast+bad  slow+good  dominated  equal-time-better  duplicate of a front point
    ms = [10.0, 100.0, 120.0, 100.0, 10.0]
    score = [50.0, 70.0, 60.0, 71.0, 50.0]
    assert pareto_front(ms, score) == [True, False, False, True, True]
    assert pareto_front([5.0], [1.0]) == [True]
    assert pareto_front([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == [True, False, False]  # fastest is also best
    assert pareto_front([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == [True, True, True]


def test_default_strategies_cover_the_papers_test_time_options() -> None:
    names = [s.name for s in default_strategies(crf=True)]
    assert names[:6] == ["OS16", "OS16 +flip", "OS16 MS +flip", "OS8", "OS8 +flip", "OS8 MS +flip"]
    assert names[6:] == [n + " +CRF" for n in names[:6]]
    assert Strategy(8, PAPER_SCALES, True).scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert len(default_strategies(crf=False)) == 6


def test_pareto_table_on_real_labels(tflite_file: Path, shared_data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openvino")
    root = shared_data / "voc2012_val_dev"
    assert main(["benchmark", "-w", str(tflite_file), "--pareto", "--dataset", "voc", "--root", str(root),
                 "--split", "val_dev", "--limit", "2", "--backend", "openvino", "--precision", "fp32",
                 "--repeats", "1", "--json", str(tmp_path / "p.json"), "--png", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "Pareto" in out and "load average" in out
    result = json.loads((tmp_path / "p.json").read_text())
    rows = result["results"]
    assert result["images"] == 2 and len(rows) == 12  # torch fp32 and openvino fp32 × six strategies
    assert {r["path"] for r in rows} == {"torch fp32", "openvino fp32"}
    by = {(r["path"], r["strategy"]): r for r in rows}
    for strategy in ("OS16", "OS8 MS +flip"):  # the same fp32 arithmetic on two engines
        assert by[("torch fp32", strategy)]["miou"] == pytest.approx(by[("openvino fp32", strategy)]["miou"], abs=0.1)
    assert by[("torch fp32", "OS16")]["miou"] != by[("torch fp32", "OS8 MS +flip")]["miou"]
    assert [r["pareto"] for r in rows] == pareto_front([r["ms"] for r in rows], [r["miou"] for r in rows])
    assert all(r["ms"] > 0 and r["min_ms"] <= r["ms"] for r in rows)
    # the OS16 single-scale mIoU is what evaluate gives on the same two images
    dataset = build_dataset("voc", root=str(root), split="val_dev")
    direct = evaluate(Predictor.from_file(tflite_file, output_stride=16), dataset, limit=2, progress=False)
    assert by[("torch fp32", "OS16")]["miou"] == pytest.approx(100 * direct.matrix.miou, abs=0.05)
    assert Image.open(tmp_path / "p.png").size == (1000, 640)


def test_pareto_refuses_what_it_cannot_measure(tflite_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "-w", str(tflite_file), "--pareto"]) != 0
    assert "--pareto needs" in capsys.readouterr().err
    assert main(["benchmark", "-w", str(tflite_file), "--crf"]) != 0
    assert "--pareto" in capsys.readouterr().err
