"""Segmentation datasets: a list of (image, mask) file pairs plus the metadata that travels with them.

    ds = voc_dataset("../shared/data/voc2012_val_dev", split="val_dev.txt")
    image, label = ds[0]                 # tensors after ``ds.transform``
    sample = ds.read(0)                  # raw arrays + paths (what ``deeplab check-data`` scans)

Builders: ``folder_dataset`` (images + masks matched by file stem), ``voc_dataset`` (VOC 2012 and the
SBD-augmented ``SegmentationClassAug``), ``camvid_dataset`` (SegNet's 11-class split), ``cityscapes_dataset``
(labelIds → trainIds). Layout mistakes fail at construction with a ``ValueError`` naming the directory, the
expected pattern, counts and the first unmatched names; file *contents* are checked by ``checks.scan_dataset``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from ..visualize import voc_colormap
from .io import IMAGE_SUFFIXES, ImageReadError, open_verified, read_image, read_label, rgb_to_index

Color = tuple[int, int, int]
PathLike = str | os.PathLike
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: JPEG compression changes class indices
_SHOW = 5  # how many unmatched names an error message lists


@dataclass
class DatasetInfo:
    """What a model trained on the dataset must carry: class names, display colours, the ignore value.

    ``label_map`` maps stored mask values to training labels (CamVid's void 11 → 255; Cityscapes labelIds →
    trainIds); values not in it pass through unchanged, so stray values stay visible to the scan.
    ``rgb_masks`` says whether RGB-coded masks may be decoded through ``palette`` (+ ``ignore_color``);
    otherwise an RGB mask is rejected rather than guessed.
    """

    name: str
    classes: list[str]
    palette: list[Color]
    ignore_index: int = 255
    label_map: dict[int, int] = field(default_factory=dict)
    rgb_masks: bool = False
    ignore_color: Color | None = None

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


# ---------------------------------------------------------------- layout helpers
def _files(directory: Path, suffixes: Sequence[str], what: str, recursive: bool = False) -> list[Path]:
    if not directory.is_dir():
        raise ValueError(f"{directory}: {what} folder does not exist" if not directory.exists()
                         else f"{directory}: expected a folder of {what}, found a file")
    entries = [p for p in (directory.rglob("*") if recursive else directory.iterdir())
               if p.is_file() and not p.name.startswith(".")]  # skip .DS_Store, macOS '._x.jpg' forks
    found = sorted(p for p in entries if p.suffix.lower() in suffixes)
    if not found:
        pattern = "|".join(f"*{s}" for s in suffixes)
        others = sorted(p.name for p in entries)
        detail = (f"found {len(others)} other file(s): {', '.join(others[:_SHOW])}" if others else "it is empty")
        raise ValueError(f"{directory}: no {what} matching {pattern}; {detail}")
    return found


def _by_stem(files: list[Path], directory: Path, what: str, key: Callable[[Path], str] = lambda p: p.stem
             ) -> dict[str, Path]:
    table: dict[str, Path] = {}
    for path in files:
        name = key(path)
        if name in table:
            raise ValueError(f"{directory}: two {what} share the name {name!r}: {table[name].name}, {path.name}")
        table[name] = path
    return table


def _unmatched(names: Sequence[str], total: int, what: str, where: Path, pattern: str) -> ValueError:
    shown = ", ".join(sorted(names)[:_SHOW]) + (" ..." if len(names) > _SHOW else "")
    return ValueError(f"{where}: {len(names)} of {total} {what} have no match for {pattern} (first: {shown})")


def read_split_file(path: PathLike) -> list[str]:
    """Ids from a split list: one per line, or VOC/SBD-style 'JPEGImages/x.jpg SegmentationClassAug/x.png'."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: split list file does not exist")
    ids = [Path(line.split()[0]).stem for line in path.read_text(encoding="utf-8").splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise ValueError(f"{path}: split list file has no ids")
    return ids


def match_pairs(images: dict[str, Path], masks: dict[str, Path] | None, *, images_dir: Path,
                masks_dir: Path | None, image_pattern: str, mask_pattern: str,
                ids: Sequence[str] | None = None, split_file: Path | None = None) -> list[tuple[Path, Path | None]]:
    """Pair images and masks by key; every unmatched name (either way) is an error."""
    if ids is not None:
        missing = [i for i in ids if i not in images]
        if missing:
            raise _unmatched(missing, len(ids), f"ids in {split_file}", images_dir, image_pattern)
        keys = list(dict.fromkeys(ids))
    else:
        keys = sorted(images)
    if masks is None:
        return [(images[k], None) for k in keys]
    no_mask = [images[k].name for k in keys if k not in masks]
    if no_mask:
        raise _unmatched(no_mask, len(keys), f"images in {images_dir}", masks_dir, mask_pattern)
    if ids is None:
        no_image = [p.name for k, p in masks.items() if k not in images]
        if no_image:
            raise _unmatched(no_image, len(masks), f"masks in {masks_dir}", images_dir, image_pattern)
    return [(images[k], masks[k]) for k in keys]


def _check_mask_suffixes(masks_dir: Path) -> None:
    lossy = sorted(p.name for p in masks_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if lossy:
        raise ValueError(f"{masks_dir}: {len(lossy)} JPEG mask(s) (first: {', '.join(lossy[:_SHOW])}); JPEG "
                         "compression changes class indices at every edge: save masks as PNG")


# ---------------------------------------------------------------- builders
def folder_dataset(images_dir: PathLike, masks_dir: PathLike | None, split_file: PathLike | None = None, *,
                   classes: Sequence[str], palette: Sequence[Color] | None = None, ignore_index: int = 255,
                   label_map: dict[int, int] | None = None, name: str = "folder",
                   transform: Callable | None = None) -> SegmentationDataset:
    """Images and masks matched by file stem (``a.jpg`` ↔ ``a.png``); ``split_file`` lists the stems to use.

    Without ``palette``, RGB-coded masks are rejected and the VOC colour map is used for display only.
    """
    images_dir = Path(images_dir)
    images = _by_stem(_files(images_dir, IMAGE_SUFFIXES, "images"), images_dir, "images")
    masks = None
    if masks_dir is not None:
        masks_dir = Path(masks_dir)
        if masks_dir.is_dir():
            _check_mask_suffixes(masks_dir)
        masks = _by_stem(_files(masks_dir, MASK_SUFFIXES, "masks"), masks_dir, "masks")
    ids = read_split_file(split_file) if split_file is not None else None
    pairs = match_pairs(images, masks, images_dir=images_dir, masks_dir=masks_dir, ids=ids,
                        split_file=None if split_file is None else Path(split_file),
                        image_pattern="<stem>.{" + ",".join(s[1:] for s in IMAGE_SUFFIXES) + "}",
                        mask_pattern="<stem>.{" + ",".join(s[1:] for s in MASK_SUFFIXES) + "}")
    info = DatasetInfo(name, list(classes), list(palette) if palette else voc_colormap(len(classes)),
                       ignore_index, dict(label_map or {}), rgb_masks=palette is not None)
    return SegmentationDataset(pairs, info, transform)


VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]
VOC_INFO = DatasetInfo("voc", VOC_CLASSES, voc_colormap(len(VOC_CLASSES)), 255, rgb_masks=True,
                       ignore_color=voc_colormap()[255])
_VOC_SPLIT_DIRS = ("ImageSets/Segmentation", "ImageSets/SegmentationAug", ".")


def voc_dataset(root: PathLike, split: str | PathLike = "val", *, augmented: bool | None = None,
                transform: Callable | None = None) -> SegmentationDataset:
    """PASCAL VOC 2012: ids from ``ImageSets/Segmentation/<split>.txt`` or from ``split`` as a list file.

    ``augmented`` (default: ``split == "trainaug"``) reads the SBD-augmented ``SegmentationClassAug`` masks.
    A relative list path is looked up under ``root`` first (``voc_dataset(dev, "val_dev.txt")``).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: VOC root folder does not exist (expected JPEGImages/, SegmentationClass/)")
    augmented = str(split) == "trainaug" if augmented is None else augmented
    candidates = [root / d / f"{split}.txt" for d in _VOC_SPLIT_DIRS] + [root / split, Path(split)]
    split_file = next((p for p in candidates if p.is_file()), None)
    if split_file is None:
        tried = ", ".join(str(p) for p in dict.fromkeys(candidates))
        raise ValueError(f"{root}: no split list for {str(split)!r} (tried {tried})")
    ids = read_split_file(split_file)
    images_dir, masks_dir = root / "JPEGImages", root / ("SegmentationClassAug" if augmented else "SegmentationClass")
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise ValueError(f"{folder}: VOC folder does not exist")
    pairs = [(images_dir / f"{i}.jpg", masks_dir / f"{i}.png") for i in ids]
    for column, folder, pattern in ((0, images_dir, "<id>.jpg"), (1, masks_dir, "<id>.png")):
        missing = [ids[k] for k, pair in enumerate(pairs) if not pair[column].is_file()]
        if missing:
            raise _unmatched(missing, len(ids), f"ids in {split_file}", folder, pattern)
    return SegmentationDataset(pairs, VOC_INFO, transform)


CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
CAMVID_VOID = 11  # stored void value; trained as ignore
# The SegNet tutorial's colours for its 11 classes; void is black.
CAMVID_PALETTE = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
CAMVID_INFO = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE, 255, {CAMVID_VOID: 255}, rgb_masks=True,
                          ignore_color=(0, 0, 0))


def camvid_dataset(root: PathLike, split: str = "train", *, transform: Callable | None = None
                   ) -> SegmentationDataset:
    """CamVid, SegNet layout: ``<split>/*.png`` with ``<split>annot/*.png`` (11 classes, void 11 → ignore)."""
    root = Path(root)
    images_dir, masks_dir = root / split, root / f"{split}annot"
    images = _by_stem(_files(images_dir, IMAGE_SUFFIXES, "images"), images_dir, "images")
    masks = _by_stem(_files(masks_dir, MASK_SUFFIXES, "masks"), masks_dir, "masks")
    pairs = match_pairs(images, masks, images_dir=images_dir, masks_dir=masks_dir,
                        image_pattern="<name>.png", mask_pattern="<name>.png")
    return SegmentationDataset(pairs, CAMVID_INFO, transform)


# Official cityscapesScripts labels.py: (labelId, trainId) for the 19 evaluated classes; every other id → 255.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                         25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_NUM_IDS = 34  # labelIds 0..33; license plate (-1) is not stored in *_labelIds.png
CITYSCAPES_LABEL_MAP = {i: _CITYSCAPES_TRAIN_IDS.get(i, 255) for i in range(-1, CITYSCAPES_NUM_IDS)}
CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle"]
CITYSCAPES_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32)]
# *_gtFine_color.png uses one colour for several ids, so RGB masks are not decoded.
CITYSCAPES_INFO = DatasetInfo("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, 255, CITYSCAPES_LABEL_MAP)
_LEFT, _GT = "_leftImg8bit", "_gtFine_labelIds"


def cityscapes_dataset(root: PathLike, split: str = "train", *, transform: Callable | None = None
                       ) -> SegmentationDataset:
    """Cityscapes fine annotations: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` ↔
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``; labelIds → the 19 trainIds, others → 255."""
    root = Path(root)
    images_dir, masks_dir = root / "leftImg8bit" / split, root / "gtFine" / split

    def key(suffix: str) -> Callable[[Path], str]:
        return lambda p: f"{p.parent.name}/{p.name[: -len(suffix + '.png')]}"

    left = [p for p in _files(images_dir, (".png",), "images", recursive=True) if p.name.endswith(_LEFT + ".png")]
    gt = [p for p in _files(masks_dir, (".png",), "masks", recursive=True) if p.name.endswith(_GT + ".png")]
    for found, folder, pattern in ((left, images_dir, f"<city>/*{_LEFT}.png"), (gt, masks_dir, f"<city>/*{_GT}.png")):
        if not found:
            raise ValueError(f"{folder}: no files matching {pattern}")
    pairs = match_pairs(_by_stem(left, images_dir, "images", key(_LEFT)), _by_stem(gt, masks_dir, "masks", key(_GT)),
                        images_dir=images_dir, masks_dir=masks_dir, image_pattern=f"<city>/<name>{_LEFT}.png",
                        mask_pattern=f"<city>/<name>{_GT}.png")
    return SegmentationDataset(pairs, CITYSCAPES_INFO, transform)


DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "folder": folder_dataset, "voc": voc_dataset, "camvid": camvid_dataset, "cityscapes": cityscapes_dataset,
}
DEFAULT_SPLITS = {"voc": "val", "camvid": "train", "cityscapes": "train"}


def build_dataset(name: str, *, root: PathLike | None = None, split: str | None = None,
                  images_dir: PathLike | None = None, masks_dir: PathLike | None = None,
                  classes: Sequence[str] | None = None, ignore_index: int = 255,
                  transform: Callable | None = None) -> SegmentationDataset:
    """One entry point for the command line and configs; usage mistakes raise ``ValueError``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == "folder":
        if images_dir is None or masks_dir is None or not classes:
            raise ValueError("the folder dataset needs images and masks folders and the class names")
        return folder_dataset(images_dir, masks_dir, split, classes=classes, ignore_index=ignore_index,
                              transform=transform)
    if root is None:
        raise ValueError(f"the {name} dataset needs its root folder")
    return DATASETS[name](root, split or DEFAULT_SPLITS[name], transform=transform)


__all__ = ["DatasetInfo", "Sample", "SegmentationDataset", "folder_dataset", "voc_dataset", "camvid_dataset",
           "cityscapes_dataset", "build_dataset", "DATASETS", "ImageReadError", "read_split_file"]
