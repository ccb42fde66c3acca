"""Keeps a thread's alternate signal stack out of a native library's hands.

OpenVINO's CPU plugin installs an alternate signal stack on the calling thread when it compiles a model and
puts back the one it found when that compiled model is destroyed, freeing its own. Two compiled models
released out of order (any cache of them, or garbage collection) leave the thread pointing at freed memory,
and the next signal handled there — a Python handler for SIGCHLD, as DataLoader workers install — writes
into the heap: the process crashed (SIGSEGV) when a later child process exited. Running each compile and each
release inside ``kept_signal_stack()`` puts back the stack the thread had before, so the library's stacks
are never the thread's once the call returns.
"""

from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from typing import Iterator

_SS_DISABLE = 2


class _StackT(ctypes.Structure):
    """``stack_t`` of Linux's C library."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True)


def current_signal_stack() -> tuple[int | None, bool, int] | None:
    """(address, disabled, size) of this thread's alternate signal stack; None off Linux."""
    libc = _libc()
    if libc is None:
        return None
    stack = _StackT()
    if libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack failed")
    return stack.ss_sp, bool(stack.ss_flags & _SS_DISABLE), stack.ss_size


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Whatever the body does to this thread's alternate signal stack is undone when it ends."""
    libc = _libc()
    if libc is None:
        yield
        return
    before = _StackT()
    libc.sigaltstack(None, ctypes.byref(before))
    try:
        yield
    finally:
        restored = _StackT(before.ss_sp, before.ss_flags & _SS_DISABLE, before.ss_size)
        libc.sigaltstack(ctypes.byref(restored), None)


__all__ = ["current_signal_stack", "kept_signal_stack"]
