"""The named datasets: ``folder_dataset`` (images + masks matched by file stem), ``voc_dataset`` (VOC 2012 and the
SBD-augmented ``SegmentationClassAug``), ``camvid_dataset`` (SegNet's 11-class split), ``cityscapes_dataset``
(labelIds → trainIds), and ``build_dataset(name, ...)``, the one entry point of the command line and configs.

    ds = voc_dataset("../shared/data/voc2012_val_dev", split="val_dev.txt")

Layout mistakes fail at construction (``layout.py``); file *contents* are checked by ``checks.scan_dataset``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from ..visualize.palette import voc_colormap
from .dataset import Color, DatasetInfo, SegmentationDataset
from .io import IMAGE_SUFFIXES
from .layout import (MASK_SUFFIXES, PathLike, by_stem, check_mask_suffixes, list_files, match_pairs,
                     read_split_file, unmatched)


def folder_dataset(images_dir: PathLike, masks_dir: PathLike | None, split_file: PathLike | None = None, *,
                   classes: Sequence[str], palette: Sequence[Color] | None = None, ignore_index: int = 255,
                   label_map: dict[int, int] | None = None, name: str = "folder",
                   transform: Callable | None = None) -> SegmentationDataset:
    """Images and masks matched by file stem (``a.jpg`` ↔ ``a.png``); ``split_file`` lists the stems to use.

    Without ``palette``, RGB-coded masks are rejected and the VOC colour map is used for display only.
    """
    images_dir = Path(images_dir)
    images = by_stem(list_files(images_dir, IMAGE_SUFFIXES, "images"), images_dir, "images")
    masks = None
    if masks_dir is not None:
        masks_dir = Path(masks_dir)
        if masks_dir.is_dir():
            check_mask_suffixes(masks_dir)
        masks = by_stem(list_files(masks_dir, MASK_SUFFIXES, "masks"), masks_dir, "masks")
    ids = read_split_file(split_file) if split_file is not None else None
    pairs = match_pairs(images, masks, images_dir=images_dir, masks_dir=masks_dir, ids=ids,
                        split_file=None if split_file is None else Path(split_file),
                        image_pattern="<stem>.{" + ",".join(s[1:] for s in IMAGE_SUFFIXES) + "}",
                        mask_pattern="<stem>.{" + ",".join(s[1:] for s in MASK_SUFFIXES) + "}")
    info = DatasetInfo(name, list(classes), list(palette) if palette else voc_colormap(len(classes)),
                       ignore_index, dict(label_map or {}), rgb_masks=palette is not None, ignore_declared=False)
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
            raise unmatched(missing, len(ids), f"ids in {split_file}", folder, pattern)
    return SegmentationDataset(pairs, VOC_INFO, transform)


CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
CAMVID_VOID = 11  # stored void value; trained as ignore
# The SegNet tutorial's colours for its 11 classes; void is black.
CAMVID_PALETTE = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
CAMVID_SEQUENCE = r"^([^_]+)_"  # 0006R0_f00930 → drive 0006R0; 0016E5_07959 → 0016E5
CAMVID_INFO = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE, 255, {CAMVID_VOID: 255}, rgb_masks=True,
                          ignore_color=(0, 0, 0), group_pattern=CAMVID_SEQUENCE)


def camvid_dataset(root: PathLike, split: str = "train", *, transform: Callable | None = None
                   ) -> SegmentationDataset:
    """CamVid, SegNet layout: ``<split>/*.png`` with ``<split>annot/*.png`` (11 classes, void 11 → ignore)."""
    root = Path(root)
    images_dir, masks_dir = root / split, root / f"{split}annot"
    images = by_stem(list_files(images_dir, IMAGE_SUFFIXES, "images"), images_dir, "images")
    masks = by_stem(list_files(masks_dir, MASK_SUFFIXES, "masks"), masks_dir, "masks")
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

    left = [p for p in list_files(images_dir, (".png",), "images", recursive=True) if p.name.endswith(_LEFT + ".png")]
    gt = [p for p in list_files(masks_dir, (".png",), "masks", recursive=True) if p.name.endswith(_GT + ".png")]
    for found, folder, pattern in ((left, images_dir, f"<city>/*{_LEFT}.png"), (gt, masks_dir, f"<city>/*{_GT}.png")):
        if not found:
            raise ValueError(f"{folder}: no files matching {pattern}")
    pairs = match_pairs(by_stem(left, images_dir, "images", key(_LEFT)), by_stem(gt, masks_dir, "masks", key(_GT)),
                        images_dir=images_dir, masks_dir=masks_dir, image_pattern=f"<city>/<name>{_LEFT}.png",
                        mask_pattern=f"<city>/<name>{_GT}.png")
    return SegmentationDataset(pairs, CITYSCAPES_INFO, transform)


DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "folder": folder_dataset, "voc": voc_dataset, "camvid": camvid_dataset, "cityscapes": cityscapes_dataset,
}
DEFAULT_SPLITS = {"voc": "val", "camvid": "train", "cityscapes": "train"}


def build_dataset(name: str, *, root: PathLike | None = None, split: str | None = None,
                  images_dir: PathLike | None = None, masks_dir: PathLike | None = None,
                  classes: Sequence[str] | None = None, ignore_index: int | None = None,
                  label_map: dict[int, int] | None = None, transform: Callable | None = None) -> SegmentationDataset:
    """One entry point for the command line and configs; usage mistakes raise ``ValueError``.

    ``split``: a split name or list file (the folder dataset without one uses every matched pair); for the named
    datasets also several joined by ``+`` (``train+val``: their union, in that order);
    ``ignore_index`` and ``label_map`` (stored mask value → training label, e.g. ``{255: 1}`` for 0/255 binary
    masks) override the dataset's own."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == "folder":
        if images_dir is None or masks_dir is None or not classes:
            raise ValueError("the folder dataset needs images and masks folders and the class names")
        dataset = folder_dataset(images_dir, masks_dir, split or None, classes=classes,
                                 ignore_index=255 if ignore_index is None else ignore_index, transform=transform)
    elif root is None:
        raise ValueError(f"the {name} dataset needs its root folder")
    else:
        parts = [DATASETS[name](root, part, transform=transform)
                 for part in _split_parts(split or DEFAULT_SPLITS[name])]
        dataset = parts[0] if len(parts) == 1 else SegmentationDataset(
            [pair for part in parts for pair in part.pairs], parts[0].info, transform)
    return with_labels(dataset, ignore_index, label_map)


def _split_parts(split: str) -> list[str]:
    """``train+val`` → ``["train", "val"]``: a union of a dataset's splits (more frames of the drives, cities or
    patients they hold — e.g. the published CamVid models train on train + val); each split at most once."""
    parts = [part.strip() for part in split.split("+")]
    if any(not part for part in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"split {split!r}: join distinct split names with '+', e.g. train+val")
    return parts


def with_labels(dataset: SegmentationDataset, ignore_index: int | None,
                label_map: dict[int, int] | None) -> SegmentationDataset:
    """The dataset with another ignore value and/or extra stored-value → label mappings."""
    if ignore_index is None and not label_map:
        return dataset
    info = dataset.info
    dataset.info = replace(info, ignore_index=info.ignore_index if ignore_index is None else ignore_index,
                           label_map={**info.label_map, **(label_map or {})},
                           ignore_declared=info.ignore_declared or ignore_index is not None)
    return dataset


__all__ = ["CAMVID_CLASSES", "CITYSCAPES_CLASSES", "DATASETS", "VOC_CLASSES", "build_dataset", "camvid_dataset",
           "cityscapes_dataset", "folder_dataset", "voc_dataset"]
