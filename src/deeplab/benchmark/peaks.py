"""The machine's matrix-multiply rates, measured now with the thread count the benchmark uses: what a
convolution network can at best reach in each precision (a convolution is a matrix multiply underneath)."""

from __future__ import annotations

import time

import torch

PEAK_SIZE = 2048


def _rate(multiply, flops: float, repeats: int = 5) -> float:
    multiply()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - began)
    return flops / best / 1e9


def matmul_rates(size: int = PEAK_SIZE) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of a size×size×size multiply in fp32, bf16 and int8 (best of 5)."""
    flops = 2.0 * size ** 3
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    rates = {"fp32": _rate(lambda: a @ b, flops)}
    a16, b16 = a.bfloat16(), b.bfloat16()
    rates["bf16"] = _rate(lambda: a16 @ b16, flops)
    a8 = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    b8 = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    try:
        rates["int8"] = _rate(lambda: torch._int_mm(a8, b8), flops)
    except RuntimeError:  # no int8 GEMM kernel in this build
        pass
    return rates
