"""COCO → VOC pre-training data, tested on a COCO-format file built from the real VOC dev masks: every class
region becomes an instance (RLE for most, exact pixel-run polygons for one), VOC's boundary pixels a crowd
region, and a non-VOC category covers background; the dataset must give back the VOC label maps exactly, drop
the images with fewer than 1,000 object pixels, and ``deeplab convert-coco`` must write them as PNGs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.cli import main
from deeplab.data.datasets import VOC_CLASSES, folder_dataset, voc_dataset

mask_api = pytest.importorskip("pycocotools.mask")

# A few real COCO category ids and names: the VOC ones under their COCO names, plus one VOC does not have.
COCO_CATEGORIES = {"person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "airplane": 5, "bus": 6, "train": 7,
                   "boat": 9, "bird": 16, "cat": 17, "dog": 18, "horse": 19, "sheep": 20, "cow": 21, "bottle": 44,
                   "chair": 62, "couch": 63, "potted plant": 64, "dining table": 67, "tv": 72, "banana": 52}
VOC_TO_COCO = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
               "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv"}
COUNT = 12


def _rle(mask: np.ndarray) -> dict:
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """The mask as pixel-run rectangles: COCO rasterises pixel (y, x) as the square [x, x+1) × [y, y+1)."""
    runs = []
    for y, row in enumerate(mask):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        for x0, x1 in zip(edges[::2], edges[1::2]):
            runs.append([float(x0), float(y), float(x1), float(y), float(x1), float(y + 1), float(x0), float(y + 1)])
    return runs


def build_coco(voc: Path, out: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(images folder, instances json, {stem: expected label}) for the first COUNT VOC dev images."""
    dataset = voc_dataset(voc, "val_dev.txt")
    images_dir = out / "images"
    images_dir.mkdir(parents=True)
    images, annotations, expected = [], [], {}
    for image_id in range(COUNT):
        sample = dataset.read(image_id)
        label = sample.label
        shutil.copy(sample.image_path, images_dir / sample.image_path.name)
        images.append({"id": image_id + 1, "file_name": sample.image_path.name, "height": label.shape[0],
                       "width": label.shape[1]})
        classes = [c for c in np.unique(label) if 0 < c < 255]
        for k, c in enumerate(classes):
            region = label == c
            name = VOC_CLASSES[c]
            segmentation = _polygons(region) if k == 0 else _rle(region)  # both encodings
            annotations.append({"id": len(annotations) + 1, "image_id": image_id + 1, "iscrowd": 0,
                                "category_id": COCO_CATEGORIES[VOC_TO_COCO.get(name, name)],
                                "segmentation": segmentation, "area": float(region.sum()),
                                "bbox": [0, 0, 1, 1]})
        annotations.append({"id": len(annotations) + 1, "image_id": image_id + 1, "iscrowd": 1,
                            "category_id": COCO_CATEGORIES["person"], "segmentation": _rle(label == 255),
                            "area": float((label == 255).sum()), "bbox": [0, 0, 1, 1]})
        background = np.zeros_like(label, dtype=bool)
        background[:20, :20] = label[:20, :20] == 0
        annotations.append({"id": len(annotations) + 1, "image_id": image_id + 1, "iscrowd": 0,
                            "category_id": COCO_CATEGORIES["banana"], "segmentation": _rle(background),
                            "area": float(background.sum()), "bbox": [0, 0, 1, 1]})
        expected[sample.image_path.stem] = label
    categories = [{"id": i, "name": name, "supercategory": "x"} for name, i in COCO_CATEGORIES.items()]
    path = out / "instances_dev.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return images_dir, path, expected


@pytest.fixture(scope="module")
def coco(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_coco(shared_data / "voc2012_val_dev", tmp_path_factory.mktemp("coco"))


def test_coco_instances_become_the_voc_label_maps(coco) -> None:
    from deeplab.data.coco import coco_voc_dataset

    images_dir, annotations, expected = coco
    object_pixels = {stem: int(((label > 0) & (label < 255)).sum()) for stem, label in expected.items()}
    dataset = coco_voc_dataset(images_dir, annotations)
    kept = [p.stem for p, _ in dataset.pairs]
    assert kept == [s for s in expected if object_pixels[s] >= 1000] and 0 < len(kept) <= COUNT
    for index, stem in enumerate(kept):
        sample = dataset.read(index)
        np.testing.assert_array_equal(sample.label, expected[stem])  # RLE, polygons, crowd → 255, banana → 0
        assert sample.image.shape[:2] == expected[stem].shape
    strict = coco_voc_dataset(images_dir, annotations, min_object_pixels=max(object_pixels.values()))
    assert len(strict) == 1


def test_convert_coco_writes_label_pngs_a_folder_dataset_reads(coco, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    images_dir, annotations, expected = coco
    out = tmp_path / "coco voc"
    assert main(["convert-coco", "--images", str(images_dir), "--annotations", str(annotations), "--output", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    stems = (out / "train.txt").read_text().split()
    assert f"{len(stems)} of {COUNT} images kept" in printed
    dataset = folder_dataset(images_dir, out, out / "train.txt", classes=VOC_CLASSES)
    for index, stem in enumerate(stems):
        assert Image.open(out / f"{stem}.png").mode == "P"
        np.testing.assert_array_equal(dataset.read(index).label, expected[stem])


def test_bad_coco_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    assert main(["convert-coco", "--images", str(tmp_path / "images"), "--annotations", str(bad),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.json: not a COCO instances file" in err
    other = tmp_path / "no_voc.json"
    other.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 52, "name": "banana"}]}))
    assert main(["convert-coco", "--images", str(tmp_path / "images"), "--annotations", str(other),
                 "--output", str(tmp_path / "o")]) == 2
    assert "none of its categories is a PASCAL VOC class" in capsys.readouterr().err
