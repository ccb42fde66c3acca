"""What the operator of ``deeplab serve`` decides: limits on what a request may send and ask for, and how
requests are batched and queued."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the service (every one a ``deeplab serve`` option)."""

    max_body_bytes: int = 20 * MB        # counted as the body streams in: chunked uploads included
    max_pixels: int = 2048 * 2048        # from the image header, before decoding (bombs never decode)
    max_batch: int = 4                   # images of equal size and options per forward pass
    max_wait_ms: float = 10.0            # how long a batch waits for company
    queue_size: int = 16                 # waiting requests; more get 503 + Retry-After
    retry_after_s: int = 1
    max_scales: int = 6                  # test-time scales a request may ask for (1: none)
    allow_flip: bool = True
    output_strides: tuple[int, ...] = (8, 16, 32)  # a request may ask for these (torch backend only)
    max_video_seconds: float = 20.0
    max_video_pixels: int = 1920 * 1088  # per frame

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "max_batch", "queue_size", "max_scales", "max_video_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.max_video_seconds <= 0 or self.retry_after_s < 0:
            raise ValueError("max_wait_ms and retry_after_s must be >= 0, max_video_seconds > 0")

    def limits(self) -> dict:
        """What ``GET /v1/model`` tells clients."""
        return {"max_body_bytes": self.max_body_bytes, "max_pixels": self.max_pixels, "max_batch": self.max_batch,
                "max_scales": self.max_scales, "flip": self.allow_flip, "output_strides": list(self.output_strides),
                "max_video_seconds": self.max_video_seconds, "max_video_pixels": self.max_video_pixels}
