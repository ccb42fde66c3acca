"""``deeplab serve`` as a child process on a free loopback port, ready when ``/readyz`` answers 200 — what the
API and browser tests and the load benchmark run against (the real server, not an in-process client), and
what a user's own integration test can use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``ServerProcess(weights, "--max-batch", "4")``; ``stop()`` sends SIGTERM and returns the exit code.
    ``threads``: the server's compute threads (OMP_NUM_THREADS)."""

    def __init__(self, weights: str | os.PathLike, *options: str, threads: int = 2, ready_timeout: float = 120) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "deeplab", "serve", "-w", str(Path(weights)),
                                         "--port", str(self.port), *options], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + ready_timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"deeplab serve exited {self.process.returncode}: "
                                   f"{self.process.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"deeplab serve was not ready within {ready_timeout:.0f} s")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
