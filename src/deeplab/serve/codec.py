"""Requests in, responses out.

In: the body is counted as it streams (a Content-Length check alone misses chunked uploads) and cut off past
the cap (413); a multipart form's ``image`` field or the raw body is the upload; the client's file name is
never used for anything. The image is decoded with the pixel cap checked from its header (413), a body that is
not an image gets 400 with the reason, a type we do not take 415.

Out: the label PNG (palette PNG, pixel values = class indices), the colour overlay (JPEG or PNG), or JSON with
the class names and areas and, on request, per-class masks in Hugging Face's image-segmentation shape
(``label``, ``score``, ``mask``: a base64 PNG) or as COCO run-length encodings.
"""

from __future__ import annotations

import base64
import io
from typing import Any, AsyncIterator

import numpy as np
from PIL import Image

from ..data.io import IMAGE_FORMATS, TooManyPixels, decode, to_rgb
from ..inference.predictor import Prediction
from ..visualize.images import encode
from ..visualize.palette import label_image, overlay

IMAGE_TYPES = {"image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp", "image/x-portable-pixmap",
               "image/jpg"}
VIDEO_TYPES = {"video/mp4", "video/quicktime", "video/x-matroska", "video/webm", "video/x-msvideo"}
FORMATS = ("png", "overlay", "json")
ACCEPT = {"image/png": "png", "image/jpeg": "overlay", "application/json": "json"}
MASK_KINDS = ("none", "png", "rle")


class RequestError(Exception):
    """A client mistake: its HTTP status and the reason, for the JSON body of the answer."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or 413 as soon as more than ``limit`` bytes have arrived."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body over the limit of {limit:,} bytes")
    return bytes(body)


def upload_of(body: bytes, content_type: str) -> tuple[bytes, str]:
    """(the uploaded bytes, their media type) from a multipart form (field ``image``) or a raw body."""
    media = content_type.split(";")[0].strip().lower()
    if media != "multipart/form-data":
        return body, media
    from multipart.multipart import parse_options_header  # python-multipart, FastAPI's own dependency

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "multipart body without a boundary")
    return _multipart_field(body, boundary, b"image")


def _multipart_field(body: bytes, boundary: bytes, wanted: bytes) -> tuple[bytes, str]:
    from multipart.multipart import MultipartParser, parse_options_header

    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=bytearray(), field=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] = bytes(data[start:end]).lower()

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["headers"][current["field"]] = bytes(data[start:end])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append(dict(current))

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_part_data": on_part_data,
                                        "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as error:  # python-multipart raises its own error types
        raise RequestError(400, f"malformed multipart body ({error})") from None
    for part in parts:
        _, params = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if params.get(b"name") == wanted:
            media = part["headers"].get(b"content-type", b"application/octet-stream").decode().lower()
            return bytes(part["data"]), media.split(";")[0].strip()
    raise RequestError(400, "the multipart form has no 'image' field")


def check_media(media: str, allow_video: bool) -> str:
    """``image`` or ``video``; 415 for a type the service does not take (an unknown type is sniffed)."""
    if media in IMAGE_TYPES or media in ("application/octet-stream", ""):
        return "image"
    if media in VIDEO_TYPES:
        if not allow_video:
            raise RequestError(415, "video uploads need PyAV on the server (pip install 'deeplab[video]')")
        return "video"
    raise RequestError(415, f"unsupported media type {media!r}; send an image ({', '.join(sorted(IMAGE_TYPES))}) "
                            f"or a video ({', '.join(sorted(VIDEO_TYPES))})")


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded image as H×W×3 uint8; 413 above the pixel cap, 400 for anything not an image."""
    if not data:
        raise RequestError(400, "empty upload")
    try:
        return to_rgb(decode(io.BytesIO(data), "upload", max_pixels, formats=IMAGE_FORMATS))
    except TooManyPixels as error:
        raise RequestError(413, str(error)) from None
    except ValueError as error:
        raise RequestError(400, str(error)) from None


def response_format(requested: str | None, accept: str | None) -> str:
    if requested is not None:
        if requested not in FORMATS:
            raise RequestError(400, f"format must be one of {', '.join(FORMATS)}, got {requested!r}")
        return requested
    for media in (accept or "").split(","):
        found = ACCEPT.get(media.split(";")[0].strip().lower())
        if found:
            return found
    return "png"


def label_png(prediction: Prediction, palette) -> bytes:
    return encode(label_image(prediction.labels, palette), "PNG")


def overlay_image(image: np.ndarray, prediction: Prediction, palette, alpha: float, as_png: bool) -> bytes:
    picture = overlay(image, prediction.labels, palette, alpha=alpha)
    return encode(picture, "PNG") if as_png else encode(picture, "JPEG", quality=90)


def segments_json(prediction: Prediction, masks: str) -> dict[str, Any]:
    """Class names, pixel areas and (``masks`` png/rle) one mask per class present; ``score`` is the mean
    probability of the class over its pixels (Hugging Face's pipeline gives a score per segment too)."""
    labels = prediction.labels
    height, width = labels.shape
    counts = np.bincount(labels.reshape(-1), minlength=prediction.num_classes)
    segments = []
    for index, name in enumerate(prediction.class_names):
        pixels = int(counts[index])
        if not pixels:
            continue
        mask = labels == index
        entry: dict[str, Any] = {"label": name, "id": index, "pixels": pixels, "fraction": pixels / labels.size}
        if prediction.probabilities is not None:
            entry["score"] = float(prediction.probabilities[index][mask].mean())
        if masks == "png":
            entry["mask"] = base64.b64encode(encode(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"),
                                                    "PNG")).decode()
        elif masks == "rle":
            entry["mask"] = rle(mask)
        segments.append(entry)
    return {"width": width, "height": height, "classes": list(prediction.class_names), "segments": segments}


def rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed run-length encoding: run lengths in column-major order, starting with zeros."""
    flat = mask.reshape(-1, order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    runs = np.diff(np.concatenate([[0], changes]))
    counts = runs.tolist() if flat.size else []
    if changes.size and changes[-1] < flat.size:
        counts.append(int(flat.size - changes[-1]))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}
