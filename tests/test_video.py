"""Video: ``deeplab predict clip.mp4`` on real CamVid frames encoded as H.264 — the overlay video keeps the
source's size, frame rate and frame count; each frame's label PNG equals the offline Predictor's on that decoded
frame, and with ``--smooth`` the exponential moving average of its probabilities; a phone's rotation (the mp4
track matrix) is honoured; a damaged file is one line."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")

from deeplab.cli import main  # noqa: E402
from deeplab.data.io import read_image  # noqa: E402
from deeplab.inference import Predictor  # noqa: E402
from deeplab.video.io import VideoWriter, probe, read_frames  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 6 frames of CamVid's validation drive (every second frame of 30 fps) as a 15 fps H.264 video."""
    path = tmp_path_factory.mktemp("video") / "drive.mp4"
    with VideoWriter(path, 480, 360, Fraction(15)) as writer:
        for frame in sorted((shared_data / "camvid" / "val").glob("*.png"))[:6]:
            writer.write(read_image(frame))
    return path


def test_a_video_gives_an_overlay_video_and_each_frames_labels(clip: Path, tflite_file: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(clip), "-w", str(tflite_file), "-o", str(out), "--frames", "--no-progress"]) == 0
    assert "6 frames, flicker" in capsys.readouterr().out
    info = probe(out / "drive_overlay.mp4")
    assert (info.width, info.height, info.fps, info.frames) == (480, 360, Fraction(15), 6)
    predictor = Predictor.from_file(tflite_file)
    frames = list(read_frames(clip))
    pngs = sorted((out / "drive_frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(6)]
    for frame, png in zip(frames, pngs):
        np.testing.assert_array_equal(np.asarray(Image.open(png)), predictor.predict([frame])[0].labels)
    from deeplab.inference.loading import load_any
    from deeplab.visualize.palette import overlay

    labels = predictor.predict([frames[0]])[0].labels
    drawn = overlay(frames[0], labels, load_any(tflite_file).card.palette).astype(int)
    first = next(read_frames(out / "drive_overlay.mp4")).astype(int)
    coloured = labels != 0  # VOC's background is drawn as the photo itself
    assert coloured.mean() > 0.02
    assert np.abs(first - drawn)[coloured].mean() < 6 < np.abs(first - frames[0].astype(int))[coloured].mean()


def test_smoothing_is_the_moving_average_of_the_probabilities(clip: Path, tflite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(clip), "-w", str(tflite_file), "-o", str(out), "--frames", "--smooth", "0.6",
                 "--no-progress"]) == 0
    predictor = Predictor.from_file(tflite_file, return_probabilities=True)
    average = None
    for frame, png in zip(read_frames(clip), sorted((out / "drive_frames").glob("*.png"))):
        p = predictor.predict([frame])[0].probabilities
        average = p if average is None else 0.6 * average + 0.4 * p
        agree = (np.asarray(Image.open(png)) == average.argmax(0)).mean()
        assert agree > 0.999, agree  # float rounding of the average may flip exact ties only
    assert main(["predict", str(clip), "-w", str(tflite_file), "-o", str(tmp_path / "x"), "--smooth", "1"]) == 2


def _rotate_90_clockwise(path: Path, height: int) -> None:
    """Set the video track's matrix (tkhd) to a 90° clockwise display rotation, as a phone held upright writes it:
    [0 1 0; -1 0 0; h 0 1] maps the stored (x, y) to the shown (h - y, x)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd")
    matrix = at + 4 + 4 + (32 if data[at + 4] == 1 else 20) + 8 + 8
    assert struct.unpack(">9i", data[matrix: matrix + 36]) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    data[matrix: matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, height << 16, 0, 1 << 30)
    path.write_bytes(bytes(data))


def test_a_phones_rotation_is_honoured(tflite_file: Path, tmp_path: Path) -> None:
    stored = np.zeros((360, 480, 3), np.uint8)
    stored[:, :240] = (255, 0, 0)  # left half red: shown upright, the top half
    stored[:, 240:] = (0, 0, 255)
    path = tmp_path / "phone.mp4"
    with VideoWriter(path, 480, 360, Fraction(10)) as writer:
        for _ in range(3):
            writer.write(stored)
    _rotate_90_clockwise(path, 360)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (360, 480, 90)
    shown = next(read_frames(path))
    assert shown.shape == (480, 360, 3)
    assert shown[:230, :, 0].mean() > 240 and shown[:230, :, 2].mean() < 15  # top: red
    assert shown[250:, :, 2].mean() > 240 and shown[250:, :, 0].mean() < 15  # bottom: blue
    assert main(["predict", str(path), "-w", str(tflite_file), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    overlay = probe(tmp_path / "o" / "phone_overlay.mp4")
    assert (overlay.width, overlay.height, overlay.rotation) == (360, 480, 0)  # written upright


def test_a_damaged_video_is_one_line_and_leaves_nothing(clip: Path, tflite_file: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 3])
    garbage = tmp_path / "garbage.mov"
    garbage.write_bytes(b"\x00" * 5000)
    out = tmp_path / "out"
    code = main(["predict", str(broken), str(garbage), "-w", str(tflite_file), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert any(str(garbage) in line and "not a readable video" in line for line in lines), err
    assert any(str(broken) in line for line in lines), err
    assert not list(out.glob("*.mp4"))  # no half-written overlay video
