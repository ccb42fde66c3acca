"""The benchmark: share-of-peak arithmetic with known answers, no ceiling from an emulated kernel, and
round-robin timing that measures each path at its steady rate."""

from __future__ import annotations

import statistics
import time

import pytest

from deeplab.benchmark.measure import Measured, time_round_robin
from deeplab.benchmark.peaks import ceilings
from deeplab.benchmark.report import rows, table

GFLOP = 10 ** 9


def _measured(name: str, precision: str, ms: float) -> Measured:
    return Measured(name, precision, seconds=[ms / 1000] * 3, agreement=1.0, max_abs_diff=0.0, rss_mb=100.0)


def test_ceilings_keep_reduced_precision_only_where_it_beats_fp32() -> None:
    # AMX-class CPU: both reduced precisions above fp32 are ceilings.
    assert ceilings({"fp32": 250.0, "bf16": 1600.0, "int8": 3000.0, "fp32 matmul": 200.0}) == {
        "fp32": 250.0, "bf16": 1600.0, "int8": 3000.0}
    # AVX2-only CPU (measured there: int8 GEMM 1 GOP/s, emulated bf16 below fp32): only fp32 is a ceiling.
    assert ceilings({"fp32": 120.0, "bf16": 40.0, "int8": 1.0}) == {"fp32": 120.0}
    assert ceilings({"fp32": 120.0}) == {"fp32": 120.0}
    assert ceilings({}) == {}


def test_rows_give_known_shares_of_peak_and_a_dash_without_one() -> None:
    # 10 GFLOP per image; 100 ms → 100 GFLOP/s, 50 ms → 200, 20 ms → 500.
    measured = [_measured("torch eager fp32", "fp32", 100.0), _measured("ort int8", "int8", 20.0),
                _measured("ov bf16", "bf16", 50.0)]
    peaks = {"fp32": 400.0, "bf16": 100.0, "int8": 2.0}
    results = rows(measured, flops=10 * GFLOP, batch=1, peaks=peaks)
    assert [r["gflops"] for r in results] == pytest.approx([100.0, 500.0, 200.0])
    assert results[0]["of_peak"] == pytest.approx(0.25)
    assert results[1]["of_peak"] is None and results[2]["of_peak"] is None
    assert [r["vs_baseline"] for r in results] == pytest.approx([1.0, 5.0, 2.0])
    lines = table(results).splitlines()
    assert " 25 % " in lines[2] and "—" in lines[3] and "%" not in lines[3]

    results = rows(measured, flops=10 * GFLOP, batch=1, peaks={"fp32": 400.0, "bf16": 800.0, "int8": 1000.0})
    assert [r["of_peak"] for r in results] == pytest.approx([0.25, 0.5, 0.25])


def test_the_int8_peak_is_a_convolution_and_leaves_torchs_quantized_engine_as_it_was() -> None:
    import torch

    from deeplab.benchmark.peaks import _int8_conv_rate, compute_rates

    if "onednn" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no oneDNN quantized engine")
    before = torch.backends.quantized.engine
    assert _int8_conv_rate(64, 3, 16) > 0
    assert torch.backends.quantized.engine == before
    rates = compute_rates()
    assert {"fp32", "bf16", "int8", "fp32 matmul"} <= set(rates) and all(v > 0 for v in rates.values())


def test_round_robin_times_each_path_as_it_runs_in_a_loop_not_just_after_a_neighbour() -> None:
    """A path that is slow on the first call after another path (a neighbour's threads still spinning on the
    cores) is timed at its steady rate, every path is timed once per round, and the calls interleave."""
    calls: list[str] = []

    def runner(name: str, steady: float, after_switch: float):
        def run(_: object) -> None:
            time.sleep(after_switch if calls and calls[-1] != name else steady)
            calls.append(name)
        return run

    times = time_round_robin({"a": runner("a", 0.002, 0.05), "b": runner("b", 0.004, 0.05)}, None,
                             warmup=1, repeats=3)  # type: ignore[arg-type]
    assert [len(v) for v in times.values()] == [3, 3]
    assert max(times["a"]) < 0.03 and max(times["b"]) < 0.03       # no timed call paid the switch
    assert statistics.median(times["b"]) > statistics.median(times["a"])  # the steady rates, in order
    assert calls[2:] == ["a", "a", "b", "b"] * 3                    # warm-up, then pairs, round-robin
