"""``deeplab serve`` tested as clients use it: the real server (uvicorn, in its own process, on a loopback port)
and real HTTP — every answer and status code, labels equal to the offline Predictor's, concurrent clients never
mixed up, a full queue answered 503 + Retry-After, SIGTERM finishing the request in flight, a video upload."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from deeplab.serve.launcher import ServerProcess as Server  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tflite_file: Path):
    running = Server(tflite_file, "--max-body-mb", "2", "--max-megapixels", "1.5", "--max-scales", "2",
                     "--max-batch", "4", "--max-wait-ms", "50")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def offline(tflite_file: Path):
    from deeplab.inference import Predictor

    return Predictor.from_file(tflite_file)


def _photo_bytes(shared_data: Path, index: int = 0) -> tuple[bytes, np.ndarray]:
    ids = (shared_data / "voc2012_val_dev" / "val_dev.txt").read_text().split()
    path = shared_data / "voc2012_val_dev" / "JPEGImages" / f"{ids[index]}.jpg"
    from deeplab.data.io import read_image

    return path.read_bytes(), read_image(path)


def _labels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.mode == "P"
    return np.asarray(image)


def test_segment_answers_png_overlay_and_json_like_the_offline_predictor(server: Server, offline, shared_data):
    data, image = _photo_bytes(shared_data)
    expected = offline.predict([image])[0]
    raw = httpx.post(f"{server.url}/v1/segment", content=data, headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(_labels(raw.content), expected.labels)
    form = httpx.post(f"{server.url}/v1/segment", files={"image": ("client-name.jpg", data, "image/jpeg")}, timeout=60)
    np.testing.assert_array_equal(_labels(form.content), expected.labels)
    overlay = httpx.post(f"{server.url}/v1/segment?format=overlay", content=data, timeout=60)
    assert overlay.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(overlay.content)).size == \
        (image.shape[1], image.shape[0])
    answer = httpx.post(f"{server.url}/v1/segment?masks=rle", content=data, headers={"Accept": "application/json"},
                        timeout=60).json()
    areas = {s["label"]: s["pixels"] for s in answer["segments"]}
    assert areas == {k: v for k, v in expected.areas().items() if v}
    from pycocotools import mask as coco_mask

    for segment in answer["segments"]:
        decoded = coco_mask.decode(coco_mask.frPyObjects(segment["mask"], *segment["mask"]["size"]))
        np.testing.assert_array_equal(decoded.astype(bool), expected.labels == segment["id"])
        assert 0 < segment["score"] <= 1
    pngs = httpx.post(f"{server.url}/v1/segment?format=json&masks=png", content=data, timeout=60).json()
    first = pngs["segments"][0]
    mask = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(first["mask"]))))
    np.testing.assert_array_equal(mask > 0, expected.labels == first["id"])


def test_every_refusal_has_its_status_and_reason(server: Server, shared_data: Path):
    url = f"{server.url}/v1/segment"
    big = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)  # 3 MB as PNG > 2 MB
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "PNG")
    answer = httpx.post(url, content=buffer.getvalue(), timeout=60)
    assert answer.status_code == 413 and "body over the limit" in answer.json()["error"]

    def chunks():  # chunked transfer: no Content-Length to check
        for _ in range(40):
            yield b"\0" * 100_000

    answer = httpx.post(url, content=chunks(), headers={"Content-Type": "image/png"}, timeout=60)
    assert answer.status_code == 413
    wide = io.BytesIO()
    Image.new("RGB", (1600, 1000)).save(wide, "PNG")  # 1.6 MP > 1.5 MP, a small file
    answer = httpx.post(url, content=wide.getvalue(), timeout=60)
    assert answer.status_code == 413 and "exceeds the limit" in answer.json()["error"]
    answer = httpx.post(url, content=b"this is not an image", headers={"Content-Type": "image/png"}, timeout=60)
    assert answer.status_code == 400 and "not a readable image" in answer.json()["error"]
    answer = httpx.post(url, content=b"hello", headers={"Content-Type": "text/plain"}, timeout=60)
    assert answer.status_code == 415 and "unsupported media type" in answer.json()["error"]
    data, _ = _photo_bytes(shared_data)
    for query, reason in (("scales=0.5,1,1.5", "at most 2 scale"), ("scales=abc", "comma-separated"),
                          ("output_stride=12", "output_stride must be one of"), ("format=gif", "format must be"),
                          ("masks=bmp", "masks must be")):
        answer = httpx.post(f"{url}?{query}", content=data, timeout=60)
        assert answer.status_code == 400 and reason in answer.json()["error"], query
    assert "Traceback" not in server.process.stderr.peek() if hasattr(server.process.stderr, "peek") else True


def test_model_health_readiness_and_metrics(server: Server):
    model = httpx.get(f"{server.url}/v1/model").json()
    assert model["classes"][15] == "person" and model["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert model["backend"] == "torch" and model["limits"]["max_pixels"] == 1_500_000
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    text = httpx.get(f"{server.url}/metrics").text
    assert 'deeplab_requests_total{status="200"}' in text and "deeplab_batch_size_bucket" in text
    openapi = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/segment" in openapi["paths"]
    page = httpx.get(server.url)
    assert page.status_code == 200 and "<title>deeplab" in page.text and "http" not in page.text.split("<script>")[0] \
        .replace('name="viewport"', "")


def test_concurrent_clients_are_batched_and_never_mixed_up(server: Server, offline, shared_data: Path):
    """Eight clients, four images of two sizes: each answer is its own image's labels; batches formed."""
    photos = [_photo_bytes(shared_data, i) for i in range(4)]
    expected = [offline.predict([image])[0].labels for _, image in photos]
    answers: list = [None] * 8

    def client(k: int) -> None:
        answers[k] = httpx.post(f"{server.url}/v1/segment", content=photos[k % 4][0], timeout=120)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, answer in enumerate(answers):
        assert answer.status_code == 200
        np.testing.assert_array_equal(_labels(answer.content), expected[k % 4])
    sizes = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("deeplab_batch_size_bucket"):
            sizes[float(line.split('le="')[1].split('"')[0]) if "+Inf" not in line else 99] = int(line.split()[-1])
    assert sizes[1.0] < sizes[99]  # some forward pass held more than one image


def test_a_full_queue_answers_503_with_retry_after(tflite_file: Path, shared_data: Path):
    busy = Server(tflite_file, "--queue", "1", "--max-batch", "1", "--max-wait-ms", "0")
    try:
        data, _ = _photo_bytes(shared_data)
        answers: list = []
        lock = threading.Lock()

        def client() -> None:
            answer = httpx.post(f"{busy.url}/v1/segment?scales=0.5,1,1.25,1.5&flip=true", content=data, timeout=120)
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(a.status_code for a in answers)
        assert 200 in statuses and 503 in statuses, statuses
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "queue is full" in refused.json()["error"]
    finally:
        assert busy.stop() == 0


def test_sigterm_finishes_the_request_in_flight_then_exits_0(tflite_file: Path, shared_data: Path):
    running = Server(tflite_file)
    data, _ = _photo_bytes(shared_data)
    result: dict = {}

    def slow_client() -> None:
        result["answer"] = httpx.post(f"{running.url}/v1/segment?scales=0.5,0.75,1,1.25,1.5,1.75&flip=true",
                                      content=data, timeout=120)

    thread = threading.Thread(target=slow_client)
    thread.start()
    time.sleep(0.5)  # the request is in flight (twelve passes take seconds)
    running.process.send_signal(signal.SIGTERM)
    thread.join()
    assert result["answer"].status_code == 200
    assert running.process.wait(timeout=60) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{running.url}/healthz", timeout=2)


def test_a_video_upload_is_answered_with_the_overlay_video(server: Server, shared_data: Path, tmp_path: Path):
    pytest.importorskip("av")
    from deeplab.video.io import VideoWriter, probe

    from fractions import Fraction

    from deeplab.data.io import read_image

    frames = [read_image(p) for p in sorted((shared_data / "camvid" / "val").glob("*.png"))[:4]]
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 480, 360, Fraction(15)) as writer:
        for frame in frames:
            writer.write(frame)
    answer = httpx.post(f"{server.url}/v1/segment", content=video.read_bytes(),
                        headers={"Content-Type": "video/mp4"}, timeout=120)
    assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4"
    (tmp_path / "answer.mp4").write_bytes(answer.content)
    info = probe(tmp_path / "answer.mp4")
    assert (info.width, info.height) == (480, 360) and info.fps == 15
    assert json.dumps(info.frames) in ("4", "null")


def test_readiness_is_503_until_the_model_is_loaded(tflite_file: Path):
    from fastapi.testclient import TestClient

    from deeplab.serve.app import create_app

    client = TestClient(create_app(tflite_file))  # not entered: the lifespan (loading, warm-up) has not run
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/segment", content=b"x").status_code == 503
    with TestClient(create_app(tflite_file)) as started:
        deadline = time.monotonic() + 60
        while started.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_an_openvino_server_answers_like_the_offline_predictor(tflite_file: Path, offline, shared_data: Path):
    pytest.importorskip("openvino")
    data, image = _photo_bytes(shared_data, 1)
    expected = offline.predict([image])[0].labels
    with Server(tflite_file, "--backend", "openvino") as running:
        assert httpx.get(f"{running.url}/v1/model").json()["backend"] == "openvino"
        answer = httpx.post(f"{running.url}/v1/segment", content=data, timeout=60)
        assert answer.status_code == 200 and (_labels(answer.content) == expected).mean() > 0.999
        refused = httpx.post(f"{running.url}/v1/segment?output_stride=16", content=data, timeout=60)
        assert refused.status_code == 400 and "needs the torch fp32 backend" in refused.json()["error"]
