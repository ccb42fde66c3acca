"""The dataset core: ``SegmentationDataset`` — (image, mask) file pairs plus the ``DatasetInfo`` that travels with
them (class names, palette, ignore value, how stored mask values map to training labels).

    sample = dataset.read(0)             # raw arrays + paths (what ``deeplab check-data`` scans)
    image, label = dataset[0]            # tensors after ``dataset.transform``

The named layouts (VOC, CamVid, Cityscapes, folders) that build one are in ``datasets.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from .io import open_verified, read_image, read_label, rgb_to_index

Color = tuple[int, int, int]
PathLike = str | os.PathLike


@dataclass
class DatasetInfo:
    """What a model trained on the dataset must carry: class names, display colours, the ignore value.

    ``label_map`` maps stored mask values to training labels (CamVid's void 11 → 255; Cityscapes labelIds →
    trainIds); values not in it pass through unchanged, so stray values stay visible to the scan.
    ``rgb_masks`` says whether RGB-coded masks may be decoded through ``palette`` (+ ``ignore_color``);
    otherwise an RGB mask is rejected rather than guessed. ``ignore_declared`` says whether the ignore value
    is the dataset's own (or the user's) rather than a default. ``group_pattern``: a regular expression whose first
    group, matched against an image's file stem, names the sequence it belongs to (``data/groups.py``).
    """

    name: str
    classes: list[str]
    palette: list[Color]
    ignore_index: int = 255
    label_map: dict[int, int] = field(default_factory=dict)
    rgb_masks: bool = False
    ignore_color: Color | None = None
    group_pattern: str | None = None
    ignore_declared: bool = True  # False: the ignore value is only the default (a 0/255 mask is then suspicious)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class Sample(NamedTuple):
    image: np.ndarray            # H×W×3 uint8 RGB, EXIF-oriented
    label: np.ndarray | None     # H×W int64 training labels (after ``label_map``)
    image_path: Path
    mask_path: Path | None
    raw_label: np.ndarray | None  # the values stored in the mask file (before ``label_map``)


class SegmentationDataset(torch.utils.data.Dataset):
    """(image, mask) file pairs; ``transform(image uint8 HWC, label int64 HW) -> (CHW float, HW int64)``.

    Unlabelled pairs (mask ``None``) give a label filled with the ignore value, so they still collate.
    """

    def __init__(self, pairs: Sequence[tuple[PathLike, PathLike | None]], info: DatasetInfo,
                 transform: Callable | None = None) -> None:
        self.pairs = [(Path(i), None if m is None else Path(m)) for i, m in pairs]
        self.info = info
        if transform is None:
            from .transforms import ToTensor
            transform = ToTensor()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.read(index)[:2]
        if label is None:
            label = np.full(image.shape[:2], self.info.ignore_index, dtype=np.int64)
        return self.transform(image, label)

    def read(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        raw, label = (None, None) if mask_path is None else self.load_label(mask_path)
        return Sample(image, label, image_path, mask_path, raw)

    def load_label(self, path: PathLike) -> tuple[np.ndarray, np.ndarray]:
        """(stored values, training labels) of one mask file.

        Palette/gray/16-bit masks keep their stored indices, then go through ``label_map``. RGB masks are
        decoded through the palette when the dataset allows it (class colour i → i, ignore colour → ignore),
        otherwise rejected by ``read_label`` with a message.
        """
        if not (self.info.rgb_masks and _is_rgb(path)):
            raw = read_label(path)
            return raw, self.remap(raw)
        palette = list(self.info.palette) + ([self.info.ignore_color] if self.info.ignore_color else [])
        index = rgb_to_index(np.asarray(open_verified(path).convert("RGB")), palette, str(path))
        index[index == len(self.info.palette)] = self.info.ignore_index
        return index, index

    def remap(self, raw: np.ndarray) -> np.ndarray:
        """Stored values → training labels through ``label_map``; unmapped values pass through."""
        if not self.info.label_map or raw.size == 0:
            return raw
        low = min(int(raw.min()), min(self.info.label_map))
        high = max(int(raw.max()), max(self.info.label_map))
        if high - low > 1 << 20:  # 32-bit masks: no lookup table that large
            out = raw.copy()
            for key, value in self.info.label_map.items():
                out[raw == key] = value
            return out
        lut = np.arange(low, high + 1, dtype=np.int64)  # identity, then the mapped values
        lut[np.array(list(self.info.label_map)) - low] = list(self.info.label_map.values())
        return lut[raw - low]

    def subset(self, indices: Sequence[int]) -> "SegmentationDataset":
        """The same dataset restricted to ``indices`` (e.g. the good files of a scan)."""
        return SegmentationDataset([self.pairs[i] for i in indices], self.info, self.transform)


def _is_rgb(path: PathLike) -> bool:
    try:  # header only; a broken file falls through to read_label, which reports it properly
        with Image.open(path) as image:
            return image.mode in ("RGB", "RGBA")
    except Exception:
        return False
