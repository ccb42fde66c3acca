"""COCO instance annotations as PASCAL VOC label maps: the data of the paper's COCO pre-training (its 82.7 % row).

``coco_voc_dataset(images_dir, annotations)`` reads an ``instances_*.json`` (polygons and RLE, through
``pycocotools``; ``pip install 'deeplab[coco]'``) and renders, per image, a label map of VOC's 21 classes:

- the 20 COCO categories that are VOC classes get their VOC index (``airplane`` → aeroplane, ``couch`` → sofa,
  ``tv`` → tvmonitor, ...); every other category, and everything unannotated, is background (0);
- pixels where instances of different classes overlap, and crowd regions (``iscrowd=1``) of VOC categories,
  are ignored (255): their class is unknown;
- images with fewer than ``min_object_pixels`` (1,000) labelled object pixels are dropped, as in the paper.

Rendering every mask is slow for 118 k images, so the usual way to train on COCO is to write the label maps
once (``deeplab convert-coco``, ``write_coco_labels``) and train on the result as a folder dataset.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from ..utils.optional import require
from ..visualize.palette import voc_colormap
from .dataset import DatasetInfo, PathLike, Sample, SegmentationDataset
from .datasets import VOC_CLASSES
from .io import read_image

MIN_OBJECT_PIXELS = 1000
IGNORE = 255
# COCO category names → VOC class names (the others are VOC's own names).
COCO_NAMES = {"airplane": "aeroplane", "dining table": "diningtable", "motorcycle": "motorbike",
              "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}
COCO_VOC_INFO = DatasetInfo("coco_voc", list(VOC_CLASSES), voc_colormap(len(VOC_CLASSES)), IGNORE)


class CocoVOCDataset(SegmentationDataset):
    """COCO images with VOC label maps rendered from their instance annotations (see the module docstring)."""

    def __init__(self, images_dir: PathLike, annotations: PathLike, *, min_object_pixels: int = MIN_OBJECT_PIXELS,
                 transform: Callable | None = None, progress: bool = False) -> None:
        coco_api = require("pycocotools.coco", "coco")
        annotations = Path(annotations)
        if not annotations.is_file():
            raise FileNotFoundError(f"{annotations}: no such COCO annotation file")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                self.coco = coco_api.COCO(str(annotations))
        except Exception as error:  # json and pycocotools raise many types for a damaged file
            raise ValueError(f"{annotations}: not a COCO instances file ({type(error).__name__}: {error})") from None
        self.voc_index = voc_categories(self.coco.loadCats(self.coco.getCatIds()), annotations)
        images_dir = Path(images_dir)
        records, pairs = [], []
        ids = sorted(self.coco.getImgIds())
        for image_id in tqdm(ids, desc="coco", unit="img", disable=not progress):
            info = self.coco.loadImgs(image_id)[0]
            label = self.render(image_id)
            if int(((label > 0) & (label != IGNORE)).sum()) < min_object_pixels:
                continue
            records.append(image_id)
            pairs.append((images_dir / info["file_name"], None))
        super().__init__(pairs, COCO_VOC_INFO, transform)
        self.image_ids = records
        self.min_object_pixels = min_object_pixels

    def render(self, image_id: int) -> np.ndarray:
        """The H×W int64 VOC label map of one COCO image."""
        info = self.coco.loadImgs(image_id)[0]
        height, width = info["height"], info["width"]
        label = np.zeros((height, width), dtype=np.int64)
        owners = np.zeros((height, width), dtype=np.int64)  # how many classes claim each pixel
        crowd = np.zeros((height, width), dtype=bool)
        claimed: dict[int, np.ndarray] = {}
        for annotation in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=None)):
            index = self.voc_index.get(annotation["category_id"])
            if index is None:
                continue  # a COCO category VOC does not have: background
            mask = self.coco.annToMask(annotation).astype(bool)
            if annotation.get("iscrowd", 0):
                crowd |= mask
            else:
                claimed[index] = claimed.get(index, np.zeros_like(mask)) | mask
        for index, mask in claimed.items():
            label[mask] = index
            owners += mask
        label[(owners > 1) | crowd] = IGNORE
        return label

    def subset(self, indices) -> "SegmentationDataset":
        chosen = list(indices)
        copy = object.__new__(CocoVOCDataset)
        SegmentationDataset.__init__(copy, [self.pairs[i] for i in chosen], self.info, self.transform)
        copy.coco, copy.voc_index, copy.min_object_pixels = self.coco, self.voc_index, self.min_object_pixels
        copy.image_ids = [self.image_ids[i] for i in chosen]
        return copy

    def read(self, index: int) -> Sample:
        image_path = self.pairs[index][0]
        label = self.render(self.image_ids[index])
        image = read_image(image_path)
        if image.shape[:2] != label.shape:
            raise ValueError(f"{image_path}: {image.shape[1]}x{image.shape[0]} but its annotations say "
                             f"{label.shape[1]}x{label.shape[0]}")
        return Sample(image, label, image_path, None, label)


def voc_categories(categories: list[dict[str, Any]], source: Path) -> dict[int, int]:
    """{COCO category id: VOC class index} for the 20 VOC classes among ``categories``."""
    index_of = {name: i for i, name in enumerate(VOC_CLASSES)}
    mapping = {c["id"]: index_of[COCO_NAMES.get(c["name"], c["name"])] for c in categories
               if COCO_NAMES.get(c["name"], c["name"]) in index_of and c["name"] != "background"}
    if not mapping:
        raise ValueError(f"{source}: none of its categories is a PASCAL VOC class")
    return mapping


def coco_voc_dataset(images_dir: PathLike, annotations: PathLike, **kwargs: Any) -> CocoVOCDataset:
    return CocoVOCDataset(images_dir, annotations, **kwargs)


def write_coco_labels(dataset: CocoVOCDataset, output: PathLike, *, split_name: str = "train",
                      progress: bool = True) -> list[str]:
    """Write each kept image's label map as ``output/<stem>.png`` (palette PNG of VOC indices) and the list of
    kept stems as ``output/<split_name>.txt``, so the folder dataset can train on them; returns the stems."""
    from ..utils.files import atomic_write_bytes
    from ..visualize.images import encode
    from ..visualize.palette import label_image

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    stems = []
    for index in tqdm(range(len(dataset)), desc="convert-coco", unit="img", disable=not progress):
        label = dataset.render(dataset.image_ids[index])
        stem = dataset.pairs[index][0].stem
        path = output / f"{stem}.png"
        atomic_write_bytes(path, encode(label_image(label, dataset.info.palette), "PNG"))
        stems.append(stem)
    atomic_write_bytes(output / f"{split_name}.txt", ("\n".join(stems) + "\n").encode())
    return stems
