"""``POST /v1/segment`` with a video: written to a temporary file, checked against the length and frame-size
limits (413), segmented on the inference thread (the one the batcher uses, so it never runs beside a batch),
and answered with the overlay video (MP4)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi.responses import Response

from .batcher import MicroBatcher
from .codec import RequestError
from .models import ModelPool, Options
from .settings import ServeSettings


async def segment_video_upload(data: bytes, pool: ModelPool, batcher: MicroBatcher, options: Options,
                               settings: ServeSettings) -> Response:
    from ..video.io import probe
    from ..video.segment import segment_video

    with tempfile.TemporaryDirectory(prefix="deeplab-video-") as folder:
        source = Path(folder) / "upload.mp4"  # never the client's name
        source.write_bytes(data)
        try:
            info = probe(source)
        except ValueError as error:
            raise RequestError(400, str(error).replace(str(source), "upload")) from None
        if info.width * info.height > settings.max_video_pixels:
            raise RequestError(413, f"video frames of {info.width}x{info.height} exceed {settings.max_video_pixels:,} "
                                    "pixels")
        if info.seconds is not None and info.seconds > settings.max_video_seconds:
            raise RequestError(413, f"a {info.seconds:.1f} s video; the limit is {settings.max_video_seconds:g} s")
        max_frames = int(settings.max_video_seconds * float(info.fps)) + 1
        predictor = pool.predictor((*options[:3], True))

        def work() -> bytes:
            result = segment_video(predictor, source, Path(folder), palette=pool.card.palette, progress=False,
                                   max_frames=max_frames)
            return result.overlay.read_bytes()

        try:
            video = await asyncio.get_running_loop().run_in_executor(batcher.executor, work)
        except ValueError as error:
            raise RequestError(413 if "allowed" in str(error) else 400, str(error).replace(str(source), "upload")) \
                from None
    return Response(video, media_type="video/mp4")
