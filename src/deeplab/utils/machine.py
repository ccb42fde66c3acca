"""What this machine is, printed by every benchmark beside its figures: the CPU model, the instruction-set
features that decide which kernels run (AVX2, AVX-512, VNNI, AVX512-BF16, AMX), the cores torch uses and the
load average — timings on a busy 2-core machine mean little, so the load is part of the result."""

from __future__ import annotations

import contextlib
import os
import platform

FEATURES = {  # /proc/cpuinfo flag → what it enables here
    "avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8",
}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _read_cpu_flags() -> frozenset[str]:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


CPU_FLAGS = _read_cpu_flags()  # read once, at import: model code asks on every call, also while torch.compile traces


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags."""
    return CPU_FLAGS


def cpu_features() -> list[str]:
    """The features of ``FEATURES`` this CPU has, in that order."""
    flags = cpu_flags()
    return [name for flag, name in FEATURES.items() if flag in flags]


def has_fast_bf16() -> bool:
    """bf16 matrix instructions (AVX512-BF16 or AMX): where bf16 autocast pays instead of emulating."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def has_amx() -> bool:
    """AMX bf16 tile instructions: oneDNN's bf16 kernels there have shapes they run slowly (``AtrousConv2d``)."""
    return "amx_bf16" in cpu_flags()


def has_vnni() -> bool:
    """int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8). Without them ONNX Runtime's u8×s8
    kernels add pairs of products in 16 bits, which saturate on full-range int8 weights."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def load_average() -> float:
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return float("nan")


def describe(threads: int | None = None) -> str:
    """One line: CPU, features, cores, threads, load."""
    import torch

    threads = torch.get_num_threads() if threads is None else threads
    features = ", ".join(cpu_features()) or "no AVX2"
    return (f"{cpu_name()} ({features}); {os.cpu_count()} logical CPUs, {threads} torch threads; "
            f"torch {torch.__version__}; load average {load_average():.2f}")
