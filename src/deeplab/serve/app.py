"""The FastAPI application of ``deeplab serve``: ``create_app(model_path, settings)``.

- ``POST /v1/segment`` — an image (multipart field ``image`` or the raw body) → label PNG, overlay or JSON
  (``format`` or the ``Accept`` header), with ``output_stride``, ``scales`` and ``flip`` within the operator's
  limits; a video → the overlay video.
- ``GET /v1/model`` — class names, palette, normalisation, backend, limits.
- ``GET /healthz`` — the process answers; ``GET /readyz`` — 503 until the model is loaded and warmed.
- ``GET /metrics`` — Prometheus text; ``GET /`` — the web page.

Every answer to a client mistake is JSON ``{"error": reason}`` with its status; an unexpected failure is a 500
whose body says only that (the details go to the server's log): no traceback ever reaches a client.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from .batcher import MicroBatcher, QueueFull
from .codec import (MASK_KINDS, RequestError, check_media, decode_upload, label_png, overlay_image, read_capped,
                    response_format, segments_json, upload_of)
from .models import ModelPool, parse_options
from .settings import ServeSettings
from .telemetry import Telemetry

log = logging.getLogger("deeplab.serve")


def create_app(model_path: str | Path, settings: ServeSettings | None = None, *, backend: str | None = None,
               precision: str = "fp32", device: str = "cpu", calibration: str | Path | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    telemetry = Telemetry(settings.max_batch)
    pool = ModelPool(model_path, backend=backend, precision=precision, device=device, calibration=calibration)
    batcher = MicroBatcher(pool.run_batch, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                           queue_size=settings.queue_size, telemetry=telemetry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        threading.Thread(target=pool.load_and_warm, name="warm-up", daemon=True).start()  # /readyz says when
        yield
        await batcher.stop()

    # No /docs or /redoc: their pages load scripts from a CDN, and this service works offline.
    app = FastAPI(title="deeplab", summary="DeepLab semantic segmentation", lifespan=lifespan, docs_url=None,
                  redoc_url=None)

    @app.middleware("http")
    async def count(request: Request, call_next):
        began = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # never a traceback to the client
            log.exception("unexpected failure on %s", request.url.path)
            response = JSONResponse({"error": "internal error (see the server log)"}, status_code=500)
        if request.url.path.startswith("/v1/"):
            telemetry.request(response.status_code, time.perf_counter() - began)
        return response

    @app.exception_handler(RequestError)
    async def client_mistake(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.reason}, status_code=error.status, headers=error.headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if pool.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": pool.state}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(telemetry.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        _require_ready(pool, settings)
        return {**pool.describe(), "limits": settings.limits()}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text("utf-8"))

    @app.post("/v1/segment")
    async def segment(request: Request, format: str | None = None, masks: str = "none", output_stride: int | None = None,
                      scales: str | None = None, flip: bool = False, alpha: float = 0.5,
                      overlay_format: str = "jpeg") -> Response:
        """Segment an image (multipart field ``image`` or the raw body); see the module docstring."""
        _require_ready(pool, settings)
        kind_of_answer = response_format(format, request.headers.get("accept"))
        if masks not in MASK_KINDS:
            raise RequestError(400, f"masks must be one of {', '.join(MASK_KINDS)}, got {masks!r}")
        if not 0.0 <= alpha <= 1.0 or overlay_format not in ("jpeg", "png"):
            raise RequestError(400, "alpha must be in [0, 1] and overlay_format jpeg or png")
        options = parse_options(output_stride, scales, flip, settings, pool, probabilities=kind_of_answer == "json")
        body = await read_capped(request.stream(), settings.max_body_bytes)
        data, media = upload_of(body, request.headers.get("content-type", ""))
        if check_media(media, allow_video=pool.video_ok) == "video":
            from .video_upload import segment_video_upload

            return await segment_video_upload(data, pool, batcher, options, settings)
        image = decode_upload(data, settings.max_pixels)
        try:
            prediction = await batcher.submit(image, options)
        except QueueFull:
            raise _busy(settings) from None
        palette = pool.card.palette
        if kind_of_answer == "png":
            return Response(label_png(prediction, palette), media_type="image/png")
        if kind_of_answer == "overlay":
            png = overlay_format == "png"
            return Response(overlay_image(image, prediction, palette, alpha, png), media_type=f"image/{overlay_format}")
        return JSONResponse(segments_json(prediction, masks))

    return app


def _busy(settings: ServeSettings) -> RequestError:
    return RequestError(503, "the queue is full; retry shortly", {"Retry-After": str(settings.retry_after_s)})


def _require_ready(pool: ModelPool, settings: ServeSettings) -> None:
    if not pool.ready:
        raise RequestError(503, f"not ready: the model is {pool.state}", {"Retry-After": str(settings.retry_after_s)})
