"""Micro-batching: requests whose images have the same size and the same test-time options share one forward
pass — never padded together, because padding changes what the image-pooling branch averages — up to
``max_batch`` images, waiting at most ``max_wait_ms`` for company. The queue is bounded: a full queue is
refused at once (``QueueFull`` → 503 + Retry-After), not left to grow into timeouts. Inference runs on one
thread of its own, off the event loop, so the server keeps answering health checks under load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from .telemetry import Telemetry

RunBatch = Callable[[list[np.ndarray], Hashable], list[Any]]  # images of one size, options → one result each


class QueueFull(Exception):
    """The queue holds ``queue_size`` requests already."""


@dataclass(eq=False)  # identity: comparing jobs field by field would compare their image arrays
class _Job:
    image: np.ndarray
    options: Hashable
    future: asyncio.Future
    queued: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        return (self.image.shape, self.options)


class MicroBatcher:
    """``await batcher.submit(image, options)`` → the result ``run_batch`` gives that image."""

    def __init__(self, run_batch: RunBatch, *, max_batch: int, max_wait_ms: float, queue_size: int,
                 telemetry: Telemetry) -> None:
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000
        self.queue_size, self.telemetry = queue_size, telemetry
        self.waiting: deque[_Job] = deque()
        self.wakeup: asyncio.Event | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.wakeup = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray, options: Hashable) -> Any:
        if len(self.waiting) >= self.queue_size:
            raise QueueFull
        job = _Job(image, options, asyncio.get_running_loop().create_future())
        self.waiting.append(job)
        self.telemetry.queue_depth = len(self.waiting)
        self.wakeup.set()
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiting:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            batch = await self._gather()
            self.telemetry.queue_depth = len(self.waiting)
            began = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch,
                                                     [job.image for job in batch], batch[0].options)
            except Exception as error:  # a request's own failure (e.g. a bad option): that request's answer
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.telemetry.batch(len(batch), time.perf_counter() - began)
            for job, result in zip(batch, results):
                if not job.future.done():  # a client that went away cancelled its future
                    job.future.set_result(result)

    async def _gather(self) -> list[_Job]:
        """The oldest job and every waiting job of its key (size, options), waiting ``max_wait`` for more."""
        first = self.waiting.popleft()
        batch = [first]
        deadline = first.queued + self.max_wait
        while len(batch) < self.max_batch:
            batch += self._take(first.key, self.max_batch - len(batch))
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0:
                break
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                batch += self._take(first.key, self.max_batch - len(batch))
                break
        return batch

    def _take(self, key: tuple, count: int) -> list[_Job]:
        taken = [job for job in self.waiting if job.key == key][:count]
        for job in taken:
            self.waiting.remove(job)
        return taken
