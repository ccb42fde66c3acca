"""Files that are what they say: every file written gets the umask's permissions (not the temporary file's
0600), an image's outputs appear together or not at all, and a re-run with --skip-existing finishes a killed
job without touching the finished images."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from deeplab.cli import main
from deeplab.utils.files import OutputGroup, atomic_write_bytes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        single = atomic_write_bytes(tmp_path / f"a{umask:o}.bin", b"x")
        group = OutputGroup()
        group.write_bytes(tmp_path / f"b{umask:o}.bin", b"y")
        [grouped] = group.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE(single.stat().st_mode) == mode and stat.S_IMODE(grouped.stat().st_mode) == mode


def test_predict_outputs_are_world_readable_under_the_usual_umask(tflite_file: Path, photos: Path,
                                                                   tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert main(["predict", str(photos / "café photo.jpg"), "-w", str(tflite_file), "-o", str(tmp_path / "o"),
                     "--no-progress", "--areas"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "o").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_an_output_group_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "kept.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with OutputGroup() as group:
            group.write_bytes(tmp_path / "kept.png", b"new")
            group.write_bytes(tmp_path / "other.jpg", b"new")
            raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.png"] and (tmp_path / "kept.png").read_bytes() == b"old"
    group = OutputGroup()
    group.write_bytes(tmp_path / "x.png", b"1")
    group.write_bytes(tmp_path / "x_overlay.jpg", b"2")
    assert group.commit(last=tmp_path / "x.png")[-1] == tmp_path / "x.png"  # the label PNG is renamed last


def test_skip_existing_finishes_a_killed_predict(tflite_file: Path, photos: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed (SIGKILL) after some images; its leftovers: finished images and possibly one image with its
    overlay but no label PNG. --skip-existing redoes only the unfinished ones."""
    out = tmp_path / "out"
    (photos / "broken.jpg").unlink()
    script = ("import os, sys\nimport deeplab.utils.files as files\nreal = os.replace\ncount = [0]\n"
              "def replace(a, b):\n    count[0] += 1\n    if count[0] == 5: os.kill(os.getpid(), 9)\n"
              "    return real(a, b)\nfiles.os.replace = replace\nfrom deeplab.cli import main\n"
              f"sys.exit(main(['predict', {str(photos)!r}, '-w', {str(tflite_file)!r}, '-o', {str(out)!r},"
              " '--no-progress', '--areas']))\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stems = [p.stem for p in photos.glob("*.jpg")]
    finished = [stem for stem in stems if (out / f"{stem}.png").exists()]
    partial = [stem for stem in stems if stem not in finished
               and any((out / f"{stem}{suffix}").exists() for suffix in ("_overlay.jpg", "_areas.json"))]
    assert len(finished) == 1  # image 1: its three outputs renamed, the label PNG last
    assert len(partial) == 1  # image 2: one output renamed, then the kill, before its label PNG
    labels = [f"{finished[0]}.png"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}
    # Without --skip-existing: the two started images are refused, the untouched third one is segmented.
    assert main(["predict", str(photos), "-w", str(tflite_file), "-o", str(out), "--no-progress", "--areas"]) == 1
    refused = capsys.readouterr()
    assert "--skip-existing to finish a run" in refused.err and "1 of 3 inputs segmented" in refused.out
    assert main(["predict", str(photos), "-w", str(tflite_file), "-o", str(out), "--no-progress", "--areas",
                 "--skip-existing"]) == 0
    printed = capsys.readouterr().out
    assert "1 of 3 inputs segmented" in printed and "2 already done" in printed  # only the partial one redone
    finished = labels[0]
    assert (out / finished).stat().st_mtime_ns == before[finished]  # the finished image was not redone
    for photo in photos.glob("*.jpg"):
        for suffix in (".png", "_overlay.jpg", "_areas.json"):
            assert (out / f"{photo.stem}{suffix}").is_file()
    assert Image.open(out / finished).mode == "P"
