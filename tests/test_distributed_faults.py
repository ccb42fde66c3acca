"""Distributed training under faults, run the way users run it — torchrun on loopback, gloo on CPU:

- a worker SIGKILLed after a checkpoint, with ``--max-restarts 1``: the job restarts, resumes from the newest
  checkpoint and finishes with weights bit-identical to an uninterrupted run;
- two torchrun agents (``--nnodes 2``, c10d rendezvous), one process each, match one node with two processes;
- a peer killed without restarts fails the job within ``train.dist_timeout_s``, naming the rank.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_config, state_dict_of
from deeplab.config import save_config

pytestmark = pytest.mark.slow

RUN = ["data.max_train_images=8", "data.crop_size=[128, 160]", "train.iterations=10", "train.checkpoint_every=2",
       "train.eval_every=1000", "train.keep_last=10", "train.batch_size=2", "data.max_val_images=1"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config_file: Path, cwd: Path, *launcher: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "deeplab", "train", "-c",
               str(config_file), "--no-progress", "--no-check"]
    return subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _config(mini_camvid: Path, tmp_path: Path, name: str, *extra: str) -> tuple[Path, Path]:
    config = make_config(mini_camvid, tmp_path / "runs", *RUN, *extra, name=name)
    path = tmp_path / f"{name}.yaml"
    save_config(config, path)
    return path, config.run_dir


def _worker_of_rank(rank: int, config_file: Path) -> int | None:
    """The PID of the training process of ``rank`` for this config (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config_file).encode() in cmdline and b"torch.distributed.run" not in b" ".join(cmdline) \
                and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _kill_after(checkpoint: Path, rank: int, config_file: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert time.monotonic() < deadline, f"{checkpoint} never appeared"
        time.sleep(0.02)
    pid = _worker_of_rank(rank, config_file)
    assert pid is not None, "the rank's worker was not found"
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def reference(mini_camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The uninterrupted two-process run."""
    tmp_path = tmp_path_factory.mktemp("reference")
    config_file, run_dir = _config(mini_camvid, tmp_path, "straight")
    process = _torchrun(config_file, tmp_path, "--standalone", "--nproc-per-node=2")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return state_dict_of(run_dir / "checkpoint_0000010.pt")


def test_a_killed_worker_restarts_and_finishes_bit_identically(mini_camvid: Path, tmp_path: Path,
                                                               reference: dict[str, torch.Tensor]) -> None:
    config_file, run_dir = _config(mini_camvid, tmp_path, "straight")
    process = _torchrun(config_file, tmp_path, "--standalone", "--nproc-per-node=2", "--max-restarts=1")
    _kill_after(run_dir / "checkpoint_0000004.pt", 1, config_file)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert "resumed from" in out and "at step" in out  # the restarted workers resumed from a checkpoint
    final = state_dict_of(run_dir / "checkpoint_0000010.pt")
    assert final.keys() == reference.keys()
    assert [k for k in final if not torch.equal(final[k], reference[k])] == []


def test_two_nodes_match_one_node_with_two_processes(mini_camvid: Path, tmp_path: Path,
                                                     reference: dict[str, torch.Tensor]) -> None:
    config_file, run_dir = _config(mini_camvid, tmp_path, "straight")
    port = _free_port()
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
              "--rdzv-id=deeplab-test"]
    agents = [_torchrun(config_file, tmp_path, *common) for _ in range(2)]
    results = [agent.communicate(timeout=600) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], [err[-2000:] for _, err in results]
    final = state_dict_of(run_dir / "checkpoint_0000010.pt")
    assert [k for k in final if not torch.equal(final[k], reference[k])] == []


def test_a_dead_peer_fails_the_job_within_the_timeout_naming_the_rank(mini_camvid: Path, tmp_path: Path) -> None:
    timeout = 30
    config_file, run_dir = _config(mini_camvid, tmp_path, "peer", "train.iterations=40",
                                   f"train.dist_timeout_s={timeout}")
    port = _free_port()
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
              "--rdzv-id=deeplab-peer", "--max-restarts=0"]
    agents = [_torchrun(config_file, tmp_path, *common) for _ in range(2)]
    _kill_after(run_dir / "checkpoint_0000002.pt", 1, config_file)
    killed_at = time.monotonic()
    results = [agent.communicate(timeout=timeout + 120) for agent in agents]
    elapsed = time.monotonic() - killed_at
    assert all(agent.returncode != 0 for agent in agents)
    assert elapsed < timeout + 60, elapsed  # failed, did not hang
    errors = "\n".join(err for _, err in results)
    assert "deeplab train: distributed run failed: rank 0 of 2 lost its peers" in errors, errors[-3000:]
    assert f"within {timeout} s (train.dist_timeout_s)" in errors
