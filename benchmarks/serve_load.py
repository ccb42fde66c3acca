"""Load test of ``deeplab serve`` on loopback: N concurrent clients posting real photos for a fixed time.

Reports throughput (answered requests/s), p50/p95/p99 latency of the accepted requests, the share of 503s (a
full queue), the batch sizes the micro-batcher reached (from ``/metrics``), and checks every accepted answer
against the offline Predictor's labels for the same image — nothing lost, nothing mixed up between clients
(identical, or a few near-tie pixels apart where a batched forward pass rounds differently from a single one).

The images: CamVid validation frames (all 480×360, so they can share a batch) and VOC photos (each its own
size). The server gets ``--threads`` compute threads; the clients mostly wait on sockets and verify their
answers after the run, so the load test itself takes little CPU from the server.

    python benchmarks/serve_load.py [-w ../shared/data/weights/deeplabv3_257_mv_gpu.tflite] [--clients 8]
        [--seconds 30] [--max-batch 4] [--max-wait-ms 10] [--queue 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab.data.io import read_image
from deeplab.export.fast_predictor import fast_predictor
from deeplab.export.runtimes import InferencePath
from deeplab.inference.loading import load_any
from deeplab.serve.launcher import ServerProcess
from deeplab.utils.machine import describe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def real_photos(count: int) -> list[Path]:
    """Half CamVid frames (one size), half VOC photos (sizes of their own)."""
    camvid = sorted((SHARED / "camvid" / "val").glob("*.png"))[: (count + 1) // 2]
    ids = (SHARED / "voc2012_val_dev" / "val_dev.txt").read_text().split()[: count // 2]
    return camvid + [SHARED / "voc2012_val_dev" / "JPEGImages" / f"{i}.jpg" for i in ids]


ROUNDING_AGREEMENT = 0.999  # batched kernels round differently: a few pixels at near-ties may flip


def verdict(answer: np.ndarray, expected: np.ndarray) -> str:
    """"exact", "rounding" (a few near-tie pixels differ: batched vs single kernels), or "wrong" (another
    image's labels, a lost or mixed-up answer)."""
    if answer.shape != expected.shape:
        return "wrong"
    agreement = float((answer == expected).mean())
    return "exact" if agreement == 1.0 else "rounding" if agreement >= ROUNDING_AGREEMENT else "wrong"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def batch_sizes(metrics: str) -> dict[int, int]:
    """Forward passes per batch size, from the cumulative Prometheus histogram."""
    cumulative = {}
    for line in metrics.splitlines():
        if line.startswith("deeplab_batch_size_bucket") and "+Inf" not in line:
            cumulative[int(float(line.split('le="')[1].split('"')[0]))] = int(line.split()[-1])
    sizes, below = {}, 0
    for size in sorted(cumulative):
        sizes[size], below = cumulative[size] - below, cumulative[size]
    return sizes


def load_test(server: ServerProcess, photos: list[tuple[bytes, str]], clients: int, seconds: float) -> dict:
    import httpx

    answers: list[tuple[int, int, float, bytes]] = []  # (photo, status, seconds, body)
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as http:
            n = k
            while time.monotonic() < stop_at:
                data, kind = photos[n % len(photos)]
                began = time.perf_counter()
                answer = http.post(f"{server.url}/v1/segment", content=data, headers={"Content-Type": kind})
                with lock:
                    answers.append((n % len(photos), answer.status_code, time.perf_counter() - began, answer.content))
                if answer.status_code == 503:
                    time.sleep(float(answer.headers.get("retry-after", "1")) / 10)  # a polite client backs off
                n += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return {"answers": answers, "wall": wall, "metrics": httpx.get(f"{server.url}/metrics").text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--weights", type=Path, default=SHARED / "weights" / "deeplabv3_257_mv_gpu.tflite")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--max-wait-ms", type=float, default=10)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    paths = real_photos(args.images)
    predictor = fast_predictor(load_any(args.weights), InferencePath())  # the server's default path
    expected = [predictor.predict([read_image(p)])[0].labels for p in paths]
    photos = [(p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg") for p in paths]
    print(f"{args.weights.name}: {args.clients} clients for {args.seconds:.0f} s, {len(paths)} real images; "
          f"max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms, queue {args.queue}")
    print(describe(args.threads))
    with ServerProcess(args.weights, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
                       "--queue", str(args.queue), threads=args.threads) as server:
        run = load_test(server, photos, args.clients, args.seconds)
    answers = run["answers"]
    accepted = [a for a in answers if a[1] == 200]
    verdicts = [verdict(np.asarray(Image.open(io.BytesIO(body))), expected[k]) for k, _, _, body in accepted]
    exact, rounding = verdicts.count("exact"), verdicts.count("rounding")
    wrong = len(verdicts) - exact - rounding
    other = sorted({status for _, status, _, _ in answers} - {200, 503})
    latencies = [seconds for _, status, seconds, _ in accepted]
    sizes = batch_sizes(run["metrics"])
    passes = sum(sizes.values())
    result = {"weights": args.weights.name, "clients": args.clients, "seconds": round(run["wall"], 1),
              "requests": len(answers), "accepted": len(accepted), "throughput_per_s": len(accepted) / run["wall"],
              "p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
              "p99_ms": 1000 * percentile(latencies, 99), "share_503": 1 - len(accepted) / max(len(answers), 1),
              "other_statuses": other, "exact_answers": exact, "rounding_answers": rounding, "wrong_answers": wrong,
              "batch_sizes": sizes,
              "mean_batch": sum(k * v for k, v in sizes.items()) / max(passes, 1), "machine": describe(args.threads)}
    print(f"{len(answers)} requests in {run['wall']:.1f} s: {result['throughput_per_s']:.2f} accepted/s, "
          f"latency p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms; "
          f"503s {100 * result['share_503']:.1f} %; other statuses {other or 'none'}")
    print(f"forward passes by batch size {sizes} (mean {result['mean_batch']:.2f} images); "
          f"answers against the offline Predictor: {exact} identical, {rounding} within float rounding "
          f"(≥ {100 * ROUNDING_AGREEMENT:g} % of pixels), {wrong} wrong")
    if latencies:
        print(f"latency mean {1000 * statistics.mean(latencies):.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
