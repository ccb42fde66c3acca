"""Prometheus metrics of the service, in the text exposition format (no client library needed): requests by
status, request latency, time in inference, queue depth and batch sizes."""

from __future__ import annotations

import threading
from collections import Counter

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts, self.total, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{bound:g}"}} {count}' for bound, count in zip(self.buckets, self.counts)]
        return out + [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:.6f}",
                      f"{name}_count {self.count}"]


class Telemetry:
    """Thread-safe: requests finish on the event loop, batches on the inference thread."""

    def __init__(self, max_batch: int) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        self.inference = Histogram(LATENCY_BUCKETS)
        self.batch_sizes = Histogram(tuple(float(b) for b in range(1, max_batch + 1)))
        self.queue_depth = 0

    def request(self, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latency.observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        with self.lock:
            self.batch_sizes.observe(size)
            self.inference.observe(seconds)

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP deeplab_requests_total Requests answered, by HTTP status.",
                     "# TYPE deeplab_requests_total counter"]
            lines += [f'deeplab_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.statuses.items())]
            lines += ["# HELP deeplab_request_seconds Time from request to response.",
                      "# TYPE deeplab_request_seconds histogram", *self.latency.lines("deeplab_request_seconds"),
                      "# HELP deeplab_inference_seconds Time of one batched forward pass.",
                      "# TYPE deeplab_inference_seconds histogram", *self.inference.lines("deeplab_inference_seconds"),
                      "# HELP deeplab_batch_size Images per forward pass.", "# TYPE deeplab_batch_size histogram",
                      *self.batch_sizes.lines("deeplab_batch_size"),
                      "# HELP deeplab_queue_depth Requests waiting for inference.", "# TYPE deeplab_queue_depth gauge",
                      f"deeplab_queue_depth {self.queue_depth}"]
        return "\n".join(lines) + "\n"
