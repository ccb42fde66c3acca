"""Sliding-window prediction in bounded memory: rows of labels are finished and handed out as soon as no later
window touches them, so memory is bounded by the tile and the image width, never by H×W×C.

The windows, their order, their batches and the per-pixel averaging are exactly those of
``tta.sliding_window_probabilities`` (an image is cut into tile×tile windows stepping by at most
``tile × (1 − overlap)``, probabilities summed and divided by how many windows cover each pixel), so the labels
equal the in-memory sliding window's bit for bit. What differs is what is kept: a circular band of
``C × tile × W`` probabilities (a step more with flip), allocated once, instead of ``C × H × W``, the image
as uint8 (each window is normalised on its own), and labels as uint8 (int16 past 256 classes). With ``flip``
the mirrored pass runs band by band beside the plain one, as the paper's test-time flip; other scales need
the whole rescaled image and are not streamed.

Probabilities are kept only when asked, written row band by row band into ``probabilities_out`` (e.g. a
memory-mapped ``.npy`` from ``open_probability_file``) so even they never sit in memory whole.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.normalization import Normalization
from .tta import ForwardFn, class_labels, logits_of, predict_probabilities, window_starts


EMIT_COLUMNS = 1024  # finished rows are averaged this many columns at a time: temporaries stay small


@dataclass
class _Pass:
    """One pass over the image (plain or mirrored): its window batches in order and its running band of sums."""

    image: np.ndarray          # H×W×3 uint8 (a mirrored view for the flipped pass)
    mirrored: bool
    chunks: list[list[tuple[int, int]]]  # (top, left) windows, in the in-memory sliding window's batches
    next_chunk: int = 0
    band: Tensor | None = None  # C × capacity × padded_w, circular: padded row r lives in band row r % capacity

    def pending_top(self) -> float:
        return self.chunks[self.next_chunk][0][0] if self.next_chunk < len(self.chunks) else math.inf


def _pieces(start: int, count: int, capacity: int) -> list[tuple[int, int, int]]:
    """Rows [start, start + count) of the image as (band row, offset, length) pieces of a circular band."""
    pieces, offset = [], 0
    while offset < count:
        row = (start + offset) % capacity
        length = min(count - offset, capacity - row)
        pieces.append((row, offset, length))
        offset += length
    return pieces


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.int16)


def open_probability_file(path: str | os.PathLike, num_classes: int, height: int, width: int) -> np.ndarray:
    """A C×H×W float16 ``.npy`` on disk, written in place as bands are finished (``np.load(mmap_mode="r")``
    reads it back without loading it)."""
    return np.lib.format.open_memmap(Path(path), mode="w+", dtype=np.float16, shape=(num_classes, height, width))


def stream_labels(forward: ForwardFn, image: np.ndarray, normalization: Normalization, tile: int, *,
                  overlap: float = 1 / 3, flip: bool = False, window_batch_size: int = 4, amp: bool = False,
                  device: torch.device | str = "cpu", channels_last: bool = False,
                  probabilities_out: np.ndarray | None = None) -> np.ndarray:
    """H×W labels of one H×W×3 uint8 ``image`` by sliding ``tile``×``tile`` windows (see the module docstring);
    ``probabilities_out`` (C×H×W, any float dtype) receives the averaged probabilities if given."""
    height, width = image.shape[:2]
    if height <= tile and width <= tile:  # one window: run it whole, unpadded, like the in-memory version
        return _whole(forward, image, normalization, flip, amp, torch.device(device), channels_last,
                      probabilities_out)
    stride = max(1, int(round(tile * (1.0 - overlap))))
    padded_h, padded_w = max(height, tile), max(width, tile)
    tops, lefts = window_starts(padded_h, tile, stride), window_starts(padded_w, tile, stride)
    row_count = _coverage(tops, tile, padded_h)  # windows over each row / column: count = rows × columns
    col_count = _coverage(lefts, tile, padded_w)
    order = [(top, left) for top in tops for left in lefts]
    chunks = [order[i:i + window_batch_size] for i in range(0, len(order), window_batch_size)]
    passes = [_Pass(image, False, chunks)] + ([_Pass(image[:, ::-1], True, chunks)] if flip else [])
    remaining = {(k, top): len(lefts) for k in range(len(passes)) for top in tops}
    # One pass never works past the row band being finished: a tile of rows. A flipped pass may run one step
    # ahead of the other (the one behind goes first); a batch of windows spanning rows regrows the band.
    capacity = tile if len(passes) == 1 else tile + stride
    labels: np.ndarray | None = None
    base, done_band = 0, -1  # rows < base are handed out; bands <= done_band are complete in every pass
    device = torch.device(device)
    while any(p.next_chunk < len(p.chunks) for p in passes):
        k = min(range(len(passes)), key=lambda i: passes[i].pending_top())  # the pass that is behind goes first
        p = passes[k]
        chunk = p.chunks[p.next_chunk]
        p.next_chunk += 1
        crops = torch.cat([_crop(p.image, top, left, tile, normalization, device) for top, left in chunk])
        if channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        probs = torch.softmax(logits_of(forward, crops, amp), dim=1)
        for (top, left), prob in zip(chunk, probs):
            _ensure_rows(p, base, top + tile - base, prob.shape[0], padded_w, capacity, device)
            for row, offset, length in _pieces(top, tile, p.band.shape[1]):
                p.band[:, row:row + length, left:left + tile] += prob[:, offset:offset + length]
            remaining[(k, top)] -= 1
        while done_band + 1 < len(tops) and all(remaining[(i, tops[done_band + 1])] == 0 for i in range(len(passes))):
            done_band += 1
            finished = tops[done_band + 1] if done_band + 1 < len(tops) else padded_h  # rows no later band touches
            if labels is None:
                labels = np.empty((height, width), dtype=label_dtype(passes[0].band.shape[0]))
            _emit(passes, base, finished, row_count, col_count, height, width, labels, probabilities_out)
            base = finished
    assert labels is not None
    return labels


def _whole(forward: ForwardFn, image: np.ndarray, normalization: Normalization, flip: bool, amp: bool,
           device: torch.device, channels_last: bool, probabilities_out: np.ndarray | None) -> np.ndarray:
    x = normalization.to_tensor(image, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    probs = predict_probabilities(lambda t: forward(t.contiguous(memory_format=memory_format)), x, flip=flip, amp=amp)
    if probabilities_out is not None:
        probabilities_out[:] = probs[0].cpu().numpy().astype(probabilities_out.dtype, copy=False)
    return class_labels(probs[0], 0).cpu().numpy().astype(label_dtype(probs.shape[1]), copy=False)


def _ensure_rows(p: _Pass, base: int, rows: int, classes: int, width: int, capacity: int,
                 device: torch.device) -> None:
    """Make the pass's circular band hold ``rows`` rows from ``base``: allocated once at ``capacity`` (a tile,
    a step more with flip), regrown — its rows moved to their new places — only when a batch of
    windows reaches further ahead."""
    if p.band is None:
        p.band = torch.zeros(classes, max(rows, capacity), width, dtype=torch.float32, device=device)
        return
    old = p.band
    if old.shape[1] >= rows:
        return
    grown = torch.zeros(classes, rows, width, dtype=torch.float32, device=device)
    for row, offset, length in _pieces(base, old.shape[1], old.shape[1]):
        for new_row, new_offset, new_length in _pieces(base + offset, length, rows):
            source = row + new_offset
            grown[:, new_row:new_row + new_length] = old[:, source:source + new_length]
    p.band = grown


def _coverage(starts: list[int], tile: int, size: int) -> Tensor:
    count = torch.zeros(size, dtype=torch.float32)
    for start in starts:
        count[start:start + tile] += 1
    return count


def _crop(image: np.ndarray, top: int, left: int, tile: int, normalization: Normalization,
          device: torch.device) -> Tensor:
    """One window, normalised on its own, zero-padded (the mean pixel) bottom/right to tile×tile."""
    window = np.ascontiguousarray(image[top:top + tile, left:left + tile])
    x = normalization.to_tensor(window, device)
    if x.shape[-2:] != (tile, tile):
        x = F.pad(x, (0, tile - x.shape[-1], 0, tile - x.shape[-2]))
    return x


def _rows(p: _Pass, top: int, count: int, a: int, b: int) -> Tensor:
    """Rows [top, top + count), columns [a, b) of the pass's circular band (a copy only where it wraps)."""
    parts = [p.band[:, row:row + length, a:b] for row, _, length in _pieces(top, count, p.band.shape[1])]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _emit(passes: list[_Pass], base: int, finished: int, row_count: Tensor, col_count: Tensor, height: int,
          width: int, labels: np.ndarray, probabilities_out: np.ndarray | None) -> None:
    """Average rows [base, finished) of every pass, write their labels (and probabilities), clear them from the
    bands for the rows that come next. Padding (rows past ``height``, columns past ``width`` — of the mirrored
    image for the flipped pass) is cut before the mirrored pass is flipped back, as the in-memory version does;
    the same element-wise arithmetic, a block of columns at a time, so the labels stay bit-identical."""
    last = min(finished, height)
    if last > base:
        rows = row_count[base:last, None].to(passes[0].band.device)
        for c0 in range(0, width, EMIT_COLUMNS):
            c1 = min(width, c0 + EMIT_COLUMNS)
            averaged: Tensor | None = None
            for p in passes:
                a, b = (width - c1, width - c0) if p.mirrored else (c0, c1)
                probs = _rows(p, base, last - base, a, b) / (rows * col_count[None, a:b].to(rows.device))
                if p.mirrored:
                    probs = probs.flip(-1)
                averaged = probs if averaged is None else averaged + probs
            if len(passes) > 1:
                averaged = averaged / len(passes)
            labels[base:last, c0:c1] = class_labels(averaged, 0).cpu().numpy().astype(labels.dtype, copy=False)
            if probabilities_out is not None:
                probabilities_out[:, base:last, c0:c1] = averaged.cpu().numpy().astype(
                    probabilities_out.dtype, copy=False)
    for p in passes:
        for row, _, length in _pieces(base, finished - base, p.band.shape[1]):
            p.band[:, row:row + length].zero_()
