"""``torchrun --nproc-per-node 2 -m deeplab predict``: the inputs sharded over two CPU processes (gloo on
loopback), each file done once, the outputs byte-identical to one process's, one summary for the whole run; and
a re-run with ``--skip-existing`` after losing some outputs redoes only those."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import deeplab_cli, digest

pytestmark = pytest.mark.slow


def test_two_processes_predict_each_file_once_like_one(tflite_file: Path, photos: Path, shared_data: Path,
                                                       tmp_path: Path) -> None:
    (photos / "broken.jpg").unlink()
    for path in sorted((shared_data / "camvid" / "val").glob("*.png"))[:3]:
        shutil.copy(path, photos / path.name)  # 6 inputs of two sizes
    args = [str(photos), "-w", str(tflite_file), "--no-progress", "--areas"]
    single = deeplab_cli("predict", *args, "-o", str(tmp_path / "one"), cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    sharded = deeplab_cli("predict", *args, "-o", str(tmp_path / "two"), cwd=tmp_path, torchrun=2)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert sharded.stdout.count("inputs segmented") == 1 and "6 of 6 inputs segmented" in sharded.stdout
    assert "by 2 processes" in sharded.stdout
    one = {p.name: digest(p) for p in (tmp_path / "one").iterdir()}
    two = {p.name: digest(p) for p in (tmp_path / "two").iterdir()}
    assert len(one) == 18 and two == one  # label PNG, overlay, areas for each; the same bytes

    lost = sorted((tmp_path / "two").glob("*.png"))[:2]
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").iterdir() if p not in lost}
    for path in lost:
        path.unlink()
    again = deeplab_cli("predict", *args, "-o", str(tmp_path / "two"), "--skip-existing", cwd=tmp_path, torchrun=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 6 inputs segmented" in again.stdout and "4 already done" in again.stdout
    assert {p.name: digest(p) for p in (tmp_path / "two").iterdir()} == one
    assert all((tmp_path / "two" / name).stat().st_mtime_ns == kept[name] for name in kept
               if not any(name.startswith(p.stem) for p in lost))  # the finished images were not redone
