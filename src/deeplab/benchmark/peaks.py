"""The machine's own compute rates, measured now with the thread count the benchmark uses: the ceiling each
inference path is held to. fp32, bf16 and int8 are each the best of a 1×1 and a 3×3 convolution (oneDNN,
channels-last, the kernels the models run on; int8 through torch's quantized oneDNN engine, u8 × s8) — a
matrix multiply can be far slower (measured: BLAS fp32 198 vs 470 GFLOP/s on an AMD EPYC; ``torch._int_mm``
1,645 against 4,920 GOP/s for the int8 convolution on a Xeon with AMX, where OpenVINO's int8 ResNet-101
reached 1,848 GOP/s — "120 %" of a matmul peak), so the matmuls are reported beside them, not used as peaks.

A reduced-precision rate below the fp32 one is no ceiling: without AVX512-BF16/AMX or VNNI those kernels are
emulated or reference loops (measured: int8 GEMM at 1 GOP/s on an AVX2-only EPYC, while the int8 model reached 77
times that rate through ONNX Runtime's own kernels), so a share of it read 7,717 %. :func:`ceilings`
leaves such a precision without a peak."""

from __future__ import annotations

import time

import torch
from torch import nn

MATMUL_SIZE = 2048


def _rate(run, flops: float, repeats: int = 5) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return flops / best / 1e9


def _conv_rate(channels: int, kernel: int, size: int, bf16: bool) -> float:
    x = torch.randn(1, channels, size, size).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False).eval()
    conv = conv.to(memory_format=torch.channels_last)
    flops = 2.0 * channels * channels * kernel * kernel * size * size
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return _rate(lambda: conv(x), flops)


def _int8_conv_rate(channels: int, kernel: int, size: int) -> float:
    """oneDNN's int8 convolution (torch's quantized engine, set for the measurement and restored): uint8
    activations by per-channel int8 weights, as the int8 models run."""
    import warnings

    from torch.ao.nn.quantized import Conv2d as QuantizedConv2d

    engine = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "onednn"
        with warnings.catch_warnings():  # torch.ao's deprecation notices
            warnings.simplefilter("ignore")
            conv = QuantizedConv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
            weight = torch.quantize_per_channel(torch.randn(channels, channels, kernel, kernel) * 0.05,
                                                torch.full((channels,), 0.01), torch.zeros(channels, dtype=torch.long),
                                                0, torch.qint8)
            conv.set_weight_bias(weight, None)
        conv.scale, conv.zero_point = 0.5, 0
        x = torch.quantize_per_tensor(torch.rand(1, channels, size, size), 0.01, 0, torch.quint8)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return _rate(lambda: conv(x), 2.0 * channels * channels * kernel * kernel * size * size)
    finally:
        torch.backends.quantized.engine = engine


def compute_rates() -> dict[str, float]:
    """G(FL)OP/s: ``fp32``/``bf16``/``int8`` (convolution peaks), ``fp32 matmul`` (BLAS), ``int8 matmul``."""
    torch.manual_seed(0)
    rates = {precision: max(_conv_rate(1024, 1, 64, bf16), _conv_rate(512, 3, 64, bf16))
             for precision, bf16 in (("fp32", False), ("bf16", True))}
    if "onednn" in torch.backends.quantized.supported_engines:
        rates["int8"] = max(_int8_conv_rate(1024, 1, 64), _int8_conv_rate(512, 3, 64))
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    flops = 2.0 * MATMUL_SIZE ** 3
    rates["fp32 matmul"] = _rate(lambda: a @ b, flops)
    a8 = torch.randint(-128, 128, (MATMUL_SIZE, MATMUL_SIZE), dtype=torch.int8)
    b8 = torch.randint(-128, 128, (MATMUL_SIZE, MATMUL_SIZE), dtype=torch.int8)
    try:
        rates["int8 matmul"] = _rate(lambda: torch._int_mm(a8, b8), flops)
    except RuntimeError:  # no int8 GEMM kernel in this build
        pass
    return rates


def ceilings(rates: dict[str, float]) -> dict[str, float]:
    """The peaks a path's achieved rate is a share of: fp32 always, bf16 and int8 only where the CPU runs them
    faster than fp32 (otherwise the measured kernel is an emulation, not what the fast paths run on)."""
    fp32 = rates.get("fp32")
    out = {"fp32": fp32} if fp32 else {}
    for precision in ("bf16", "int8"):
        rate = rates.get(precision)
        if rate and fp32 and rate > fp32:
            out[precision] = rate
    return out
